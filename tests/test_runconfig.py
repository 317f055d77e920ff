"""Presets and run settings."""

from __future__ import annotations

import pytest

from lossbench.errors import ParameterError
from lossbench.registry import load_registry
from lossbench.runconfig import PRESETS, resolve_run_config
from lossbench.settings import build_config

REG = load_registry()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("network", ["attunet", "segresnet", "unet", "unetr"])
def test_every_builtin_network_fits_every_preset(preset, network):
    cfg = build_config(REG, loss="l1dfl", net=network, preset=preset)  # the network's own preset values
    REG.get("network", network).check(cfg.network_params, patch=cfg.patch, spatial_dims=3,
                                      batch_size=cfg.batch)


def test_paper_preset_is_the_study():
    p = PRESETS["paper"]
    assert (p["lr"], p["weight_decay"], p["batch"], p["patch"], p["val_every"], p["spacing"], p["pos_neg"]) == (
        2e-4, 1e-5, 4, (128, 128, 128), 2, (2.0, 2.0, 2.0), (4.0, 1.0))
    assert p["amp"] is True and p["epochs"] == 1000


def resolve(**train):
    return resolve_run_config(loss="dl", loss_params={}, network="attunet", network_params={}, dataset="psma",
                              dataset_params={}, fold=0, seed=0, preset="cpu", train=train)


def test_settings_are_coerced():
    cfg = resolve(patch="64", spacing="2,2,3", pos_neg="1:1", amp="false", epochs="3")
    assert cfg.patch == (64, 64, 64) and cfg.spacing == (2.0, 2.0, 3.0) and cfg.pos_neg == (1.0, 1.0)
    assert cfg.amp is False and cfg.epochs == 3


@pytest.mark.parametrize("train, fragment", [
    ({"patch": "64,64"}, "1 or 3"), ({"epochs": 0}, ">= 1"), ({"lr": "fast"}, "expects float"),
    ({"warmup": 3}, "unknown training setting"), ({"pos_neg": "4"}, "4:1"),
])
def test_bad_settings(train, fragment):
    with pytest.raises(ParameterError, match=fragment):
        resolve(**train)


def test_identity_changes_with_what_matters():
    base = resolve()
    assert base.identity("split", "code") == resolve().identity("split", "code")
    assert base.identity("split", "code") != resolve(epochs=2).identity("split", "code")
    assert base.identity("split", "code") != base.identity("other split", "code")
    assert base.identity("split", "code") != base.identity("split", "new code")


def test_the_preset_warm_up_shortens_with_the_epochs_but_an_explicit_one_is_checked():
    assert resolve().warmup_epochs == 2 and resolve(epochs=2).warmup_epochs == 1
    assert resolve(epochs=1).warmup_epochs == 0
    with pytest.raises(ParameterError, match="warmup_epochs"):
        resolve(epochs=2, warmup_epochs=2)


def test_new_settings_are_checked():
    with pytest.raises(ParameterError, match="num_samples"):
        resolve(num_samples=0)
    assert resolve(num_samples="3").num_samples == 3

"""lossbench's pytest plugin (``pytest11`` entry point): active once lossbench is installed, and its
fixtures work for a plugin author's tests with no conftest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

import lossbench
from lossbench import Component
from lossbench.errors import DuplicateComponentError, ParameterError
from lossbench.testing import pytest_plugin

# logits [B=1, C=2, 1, 2] all zero: p = 0.5 for both classes on both voxels; target: voxel 0 foreground.
HALF, FIRST = [[[[0.0, 0.0]], [[0.0, 0.0]]]], [[[[1, 0]]]]
# MONAI's Dice loss over both channels: each channel has 2·0.5 / (1 + 1) = 0.5, so DL = 0.5.
DICE_CASE = ({}, HALF, FIRST, 0.5)


def plugin_with(*components: Component) -> types.SimpleNamespace:
    """A plugin object (pluggy takes any object with hook implementations)."""

    def register_losses(register):
        for component in components:
            register(component)

    return types.SimpleNamespace(register_losses=lossbench.hookimpl(register_losses))


def test_the_entry_point_activates_the_plugin(pytestconfig):
    assert pytestconfig.pluginmanager.get_plugin("lossbench") is pytest_plugin


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, lossbench.testing.pytest_plugin; print(sorted({'torch', 'monai', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_fixture_holds_the_installed_plugins(lossbench_registry):
    assert {"l1dfl", "dl", "dfl", "dce"} <= set(lossbench_registry.names("loss"))


def test_registry_fixture_honours_the_switches(monkeypatch, request):
    monkeypatch.setenv("LOSSBENCH_DISABLE_PLUGINS", "monai")
    registry = request.getfixturevalue("lossbench_registry")
    assert "l1dfl" in registry.names("loss") and "dl" not in registry.names("loss")


def test_make_registry_isolates_a_plugin(lossbench_make_registry):
    mine = Component(kind="loss", name="mine", summary="mine", factory="torch.nn:L1Loss")
    registry = lossbench_make_registry(("mine", plugin_with(mine)))
    assert registry.names("loss") == ["mine"]
    assert registry.get("loss", "mine").plugin == "mine"
    assert registry.names("network") == []


def test_make_registry_with_entry_points_finds_a_duplicate(lossbench_make_registry):
    dupe = Component(kind="loss", name="dl", summary="another Dice", factory="torch.nn:L1Loss")
    registry = lossbench_make_registry(("dupe", plugin_with(dupe)), entry_points=True)
    with pytest.raises(DuplicateComponentError, match="plugin monai .* and by plugin dupe"):
        registry.get("loss", "dl")
    assert "l1dfl" in registry.names("loss")


def test_build_loss_builds_with_checked_params(lossbench_build_loss):
    import torch

    loss = lossbench_build_loss("dl", include_background=False)
    assert isinstance(loss, torch.nn.Module)
    # background left out: only the foreground channel's Dice, 0.5 as in DICE_CASE
    value = loss(torch.tensor(HALF), torch.tensor(FIRST))
    assert float(value) == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ParameterError, match="no_such"):
        lossbench_build_loss("dl", no_such=1)


def test_loss_contract_fixture_runs_checks_and_cases(lossbench_loss_contract):
    results = lossbench_loss_contract("dl", cases=[DICE_CASE])
    assert [name for name, _ in results] == [
        "finite_2d", "finite_3d", "empty_ground_truth", "perfect_beats_random", "shape_mismatch",
        "deterministic", "case0",
    ]
    assert all(error is None for _, error in results)


def test_loss_contract_fixture_fails_listing_every_failure(lossbench_loss_contract, lossbench_registry):
    wrong = ({}, HALF, FIRST, 0.25, "wrong")
    with pytest.raises(pytest.fail.Exception, match=r"fails 1 of 7:\n  wrong: loss is 0\.49999\d*, hand-computed 0\.25"):
        lossbench_loss_contract(lossbench_registry.get("loss", "dl"), cases=[wrong])


def test_a_fresh_project_gets_the_fixtures_without_a_conftest(tmp_path):
    """What a plugin author sees: no conftest, no pytest_plugins line; -p no:lossbench turns it off."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        def test_fixtures(lossbench_build_loss, lossbench_loss_contract):
            assert lossbench_build_loss("l1dfl", gamma=0.0) is not None
            lossbench_loss_contract("dl", {"squared_pred": True})
    """))
    run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)]
    on = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert on.returncode == 0 and "1 passed" in on.stdout, on.stdout[-2000:]
    off = subprocess.run([*run, "-p", "no:lossbench"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert off.returncode == 1 and "fixture 'lossbench_build_loss' not found" in off.stdout

"""Every registered loss — built-in or third party — is held to the same contract."""

from __future__ import annotations

import pytest

from lossbench.registry import load_registry
from lossbench.testing import LOSS_CHECKS, run_loss_check, run_loss_contract

REGISTRY = load_registry()
LOSSES = REGISTRY.names("loss")

# Non-default settings worth holding to the contract too.
VARIANTS = [
    ("l1dfl", {"epsilon": 0.1, "gamma": 0.0}),
    ("dfl", {"focal": "softmax"}),
    ("dl", {"include_background": False, "squared_pred": True}),
]


def test_registry_holds_the_study_losses():
    assert {"l1dfl", "dl", "dfl", "dce"} <= set(LOSSES)


@pytest.mark.parametrize("check", list(LOSS_CHECKS))
@pytest.mark.parametrize("name", LOSSES)
def test_loss_contract(name, check):
    run_loss_check(check, REGISTRY.get("loss", name))


@pytest.mark.parametrize("name, overrides", VARIANTS, ids=[f"{n}-{'-'.join(o)}" for n, o in VARIANTS])
def test_loss_contract_variants(name, overrides):
    failures = [(c, e) for c, e in run_loss_contract(REGISTRY.get("loss", name), overrides) if e]
    assert not failures


def test_contract_catches_a_bad_loss():
    """The contract must be able to fail: a loss that ignores shapes and returns NaN on empty targets."""
    import torch

    from lossbench import Component

    class Sloppy(torch.nn.Module):
        def forward(self, logits, target):
            p = torch.softmax(logits, 1)[:, 1:]
            t = target.float()
            return 1 - (2 * (p * t).sum()) / (2 * (p * t).sum() + (p * (1 - t)).sum() * 0 + t.sum() * 0)

    comp = Component(kind="loss", name="sloppy", summary="broken on purpose", factory=Sloppy)
    results = dict(run_loss_contract(comp))
    assert results["empty_ground_truth"] is not None
    assert results["shape_mismatch"] is not None

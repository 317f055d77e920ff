"""Every registered loss — built-in or third party — is held to the same contract."""

from __future__ import annotations

import pytest

from lossbench.registry import load_registry
from lossbench.testing import LOSS_CHECKS, LossCase, LossContract, run_loss_case, run_loss_check, run_loss_contract

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


# logits [B=1, C=2, 1, 3]: foreground probabilities 1/2, 3/4, 1/4 (softmax of (0, 0), (0, ln 3), (ln 3, 0)).
LN3 = 1.0986122886681098
THIRDS = [[[[0.0, 0.0, LN3]], [[0.0, LN3, 0.0]]]]
TARGET = [[[[1, 1, 0]]]]
S = 1e-5


class TestDiceLossByHand(LossContract):
    """The base class plugin authors subclass, on a built-in: contract checks plus a cases table."""

    loss_name = "dl"
    loss_cases = [
        # foreground: Σpy = 1/2 + 3/4, Σp = 3/2, Σy = 2;  background (p = 1/2, 1/4, 3/4): Σpy = 3/4, Σp = 3/2, Σy = 1
        LossCase({}, THIRDS, TARGET,
                 1 - ((2 * 1.25 + S) / (1.5 + 2 + S) + (2 * 0.75 + S) / (1.5 + 1 + S)) / 2, id="both-channels"),
        LossCase({"include_background": False}, THIRDS, TARGET, 1 - (2 * 1.25 + S) / (1.5 + 2 + S), id="foreground"),
    ]


def test_a_wrong_hand_computed_value_fails_with_both_numbers():
    case = LossCase({"include_background": False}, THIRDS, TARGET, 0.5)
    with pytest.raises(AssertionError, match=r"loss is 0\.2857\d*, hand-computed 0\.5 .* with \{'include_background': False\}"):
        run_loss_case(case, REGISTRY.get("loss", "dl"))


def test_a_case_is_a_loss_case_or_a_tuple():
    assert LossCase.of(({}, THIRDS, TARGET, 0.5)) == LossCase({}, THIRDS, TARGET, 0.5)
    with pytest.raises(TypeError, match="params, logits, target, expected"):
        LossCase.of((THIRDS, TARGET))

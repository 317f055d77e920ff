"""The loss contract: checks every registered loss must pass, built-in or third party.

Each check takes a zero-argument ``make_loss`` callable (so that construction itself is part
of what is checked, and determinism can build the loss twice) and raises ``AssertionError``
with a message saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from lossbench.components import Component
from lossbench.testing.cases import LossCase

MakeLoss = Callable[[], torch.nn.Module]

#: Spatial shapes the contract uses: one 2D, one 3D, both small enough for a CPU.
SHAPES = {"2d": (12, 10), "3d": (6, 8, 5)}
N_CLASSES = 2
BATCH = 2


def random_inputs(
    spatial: tuple[int, ...] = SHAPES["3d"], seed: int = 0, foreground: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``logits [2, 2, *spatial]`` and a target ``[2, 1, *spatial]`` (about 30 % foreground,
    at least one foreground voxel per sample; none when ``foreground`` is false), from ``seed``.
    These are the inputs the contract checks use.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn((BATCH, N_CLASSES, *spatial), generator=gen)
    if foreground:
        target = (torch.rand((BATCH, 1, *spatial), generator=gen) < 0.3).long()
        target.view(BATCH, -1)[:, 0] = 1  # every sample has foreground
    else:
        target = torch.zeros((BATCH, 1, *spatial), dtype=torch.long)
    return logits, target


def _perfect_logits(target: torch.Tensor, margin: float = 12.0) -> torch.Tensor:
    onehot = torch.zeros((target.shape[0], N_CLASSES, *target.shape[2:]))
    onehot.scatter_(1, target, 1.0)
    return (2.0 * onehot - 1.0) * margin


def _value(loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = loss(logits, target)
    assert isinstance(out, torch.Tensor), f"loss must return a tensor, got {type(out).__name__}"
    assert out.dim() == 0, f"loss must return a scalar (reduced) tensor, got shape {tuple(out.shape)}"
    return out


def _finite_with_gradient(make_loss: MakeLoss, dims: str, foreground: bool = True) -> None:
    logits, target = random_inputs(SHAPES[dims], foreground=foreground)
    logits.requires_grad_(True)
    value = _value(make_loss(), logits, target)
    assert torch.isfinite(value), f"{dims}: loss is {value.detach().item()}"
    value.backward()
    assert logits.grad is not None, f"{dims}: no gradient reached the logits"
    assert torch.isfinite(logits.grad).all(), f"{dims}: gradient has NaN/inf"
    assert logits.grad.abs().sum() > 0, f"{dims}: gradient is identically zero"


def check_finite_2d(make_loss: MakeLoss) -> None:
    """2D input: finite scalar value and a finite, non-zero gradient."""
    _finite_with_gradient(make_loss, "2d")


def check_finite_3d(make_loss: MakeLoss) -> None:
    """3D input: finite scalar value and a finite, non-zero gradient."""
    _finite_with_gradient(make_loss, "3d")


def check_empty_ground_truth(make_loss: MakeLoss) -> None:
    """A target without foreground gives a finite value and gradient (no NaN from 0/0)."""
    for dims in SHAPES:
        _finite_with_gradient(make_loss, dims, foreground=False)


def check_perfect_beats_random(make_loss: MakeLoss) -> None:
    """Confident correct logits score strictly lower than random logits."""
    loss = make_loss()
    for dims, spatial in SHAPES.items():
        random_logits, target = random_inputs(spatial, seed=1)
        perfect = float(_value(loss, _perfect_logits(target), target))
        random = float(_value(loss, random_logits, target))
        assert perfect < random, f"{dims}: perfect prediction {perfect:.6g} is not below random {random:.6g}"


def check_shape_mismatch(make_loss: MakeLoss) -> None:
    """Targets that do not match the logits raise ValueError with a message (not a silent broadcast)."""
    loss = make_loss()
    logits, target = random_inputs(SHAPES["3d"])
    bad_targets = {
        "spatial size differs": target[..., :-1],
        "target has C channels": torch.cat([target, target], dim=1),
        "target lacks the channel axis": target[:, 0],
    }
    for what, bad in bad_targets.items():
        try:
            loss(logits, bad)
        except ValueError as exc:
            assert str(exc).strip(), f"{what}: ValueError without a message"
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{what}: raised {type(exc).__name__} ({exc}); expected ValueError") from exc
        raise AssertionError(f"{what}: no error for target {tuple(bad.shape)} vs logits {tuple(logits.shape)}")


def check_deterministic(make_loss: MakeLoss) -> None:
    """Same seed and inputs, two fresh instances: identical value and gradient."""
    results = []
    for _ in range(2):
        torch.manual_seed(1234)
        logits, target = random_inputs(SHAPES["3d"], seed=7)
        logits.requires_grad_(True)
        value = _value(make_loss(), logits, target)
        value.backward()
        results.append((value.detach(), logits.grad))
    (v1, g1), (v2, g2) = results
    assert torch.equal(v1, v2), f"values differ: {float(v1)!r} vs {float(v2)!r}"
    assert torch.equal(g1, g2), "gradients differ between two identical calls"


LOSS_CHECKS: dict[str, Callable[[MakeLoss], None]] = {
    "finite_2d": check_finite_2d,
    "finite_3d": check_finite_3d,
    "empty_ground_truth": check_empty_ground_truth,
    "perfect_beats_random": check_perfect_beats_random,
    "shape_mismatch": check_shape_mismatch,
    "deterministic": check_deterministic,
}


def run_loss_check(check: str, component: Component, overrides: Mapping[str, Any] | None = None) -> None:
    """Run one named check on a registered loss; raises AssertionError on failure."""
    LOSS_CHECKS[check](lambda: component.build(overrides))


def run_loss_contract(
    component: Component, overrides: Mapping[str, Any] | None = None
) -> list[tuple[str, str | None]]:
    """Run every check; returns ``(check, None)`` for a pass and ``(check, message)`` for a failure."""
    results: list[tuple[str, str | None]] = []
    for name in LOSS_CHECKS:
        try:
            run_loss_check(name, component, overrides)
        except AssertionError as exc:
            results.append((name, str(exc) or "assertion failed"))
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported as such
            results.append((name, f"{type(exc).__name__}: {exc}"))
        else:
            results.append((name, None))
    return results


def run_loss_case(
    case: LossCase | tuple, component: Component, overrides: Mapping[str, Any] | None = None
) -> float:
    """Build the loss with ``overrides`` then the case's own params, and compare its value on the
    case's tensors with the hand-computed ``expected``; returns the value, raises AssertionError.
    """
    case = LossCase.of(case)
    params = {**(overrides or {}), **case.params}
    logits = torch.as_tensor(case.logits, dtype=torch.float32)
    target = torch.as_tensor(case.target, dtype=torch.long)
    value = float(_value(component.build(params), logits, target))
    expected = float(case.expected)
    tolerance = case.atol + case.rtol * abs(expected)
    if abs(value - expected) > tolerance:
        with_params = f" with {params}" if params else ""
        raise AssertionError(f"loss is {value:.7g}, hand-computed {expected:.7g} (tolerance {tolerance:.1g}){with_params}")
    return value

"""L1DFL against hand-computed values (PAPER.md §1.2)."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.registry import load_registry
from lossbench_l1dfl.loss import L1WeightedDiceFocalLoss, bin_geometry, bin_index, harmonising_weights


def test_bin_geometry_eps_005():
    left, width = bin_geometry(0.05)
    assert left.numel() == 21
    expected_left = [0.0] + [0.025 + 0.05 * k for k in range(20)]
    assert torch.allclose(left.double(), torch.tensor(expected_left, dtype=torch.float64), atol=1e-7)
    assert width[0].item() == pytest.approx(0.025) and width[-1].item() == pytest.approx(0.025)
    assert torch.allclose(width[1:-1], torch.full((19,), 0.05, dtype=torch.float64))


def test_bin_geometry_eps_01_has_11_bins():
    left, width = bin_geometry(0.1)
    assert left.numel() == 11 and width.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "g, expected",
    [(0.0, 0), (0.0249, 0), (0.025, 1), (0.0749, 1), (0.075, 2), (0.5, 10), (0.9749, 19), (0.975, 20), (1.0, 20)],
)
def test_bin_edges_eps_005(g, expected):
    left, _ = bin_geometry(0.05)
    assert bin_index(torch.tensor([g], dtype=torch.float32), left).item() == expected


@pytest.mark.parametrize("g, expected", [(0.049, 0), (0.05, 1), (0.95, 10), (1.0, 10)])
def test_bin_edges_eps_01(g, expected):
    left, _ = bin_geometry(0.1)
    assert bin_index(torch.tensor([g]), left).item() == expected


def test_weights_are_n_times_width_over_count():
    # N = 8: six values in bin 0 (width 0.025), two in bin 10 (width 0.05)
    g = torch.tensor([0.0, 0.01, 0.02, 0.0, 0.0249, 0.003, 0.5, 0.51])
    beta = harmonising_weights(g, 0.05)
    expected = torch.tensor([8 * 0.025 / 6] * 6 + [8 * 0.05 / 2] * 2)
    assert torch.allclose(beta, expected)
    assert not beta.requires_grad


def test_lone_hard_voxel_gets_large_weight():
    g = torch.zeros(1000)
    g[0] = 1.0
    beta = harmonising_weights(g, 0.05)
    assert beta[0].item() == pytest.approx(1000 * 0.025 / 1)
    assert beta[1].item() == pytest.approx(1000 * 0.025 / 999)


def test_counts_are_exact_beyond_float32_range():
    """float32 counts stop at 2**24; with int64 counts N·w/n stays exactly w for one full bin."""
    n = 2**24 + 2**22
    g = torch.zeros(n)
    beta = harmonising_weights(g, 0.05)
    assert beta[0].item() == pytest.approx(0.025, rel=1e-6)  # float32 counts would give 1.25 × 0.025


def tiny_case():
    """B=1, C=2, 1×3 pixels. p_fg = 3/4, 1/2, 1/4; target = 1, 0, 0."""
    z_fg = torch.tensor([math.log(3), 0.0, -math.log(3)])
    logits = torch.stack([torch.zeros(3), z_fg]).reshape(1, 2, 1, 3)
    target = torch.tensor([1, 0, 0]).reshape(1, 1, 1, 3)
    return logits, target


def expected_tiny(gamma: float = 2.0) -> float:
    # g = 1/4 (voxels 0, 2; both channels) -> bin 5 (n=4); g = 1/2 (voxel 1) -> bin 10 (n=2); N = 6
    b5, b10 = 6 * 0.05 / 4, 6 * 0.05 / 2
    beta = [b5, b10, b5]
    p_fg, y_fg = [0.75, 0.5, 0.25], [1, 0, 0]
    p_bg, y_bg = [0.25, 0.5, 0.75], [0, 1, 1]

    def d(p, y):
        inter = sum(b * pi * yi for b, pi, yi in zip(beta, p, y))
        union = sum(b * (pi**2 + yi**2) for b, pi, yi in zip(beta, p, y))
        return (2 * inter + 1e-8) / (union + 1e-8)

    dice = 1 - (d(p_fg, y_fg) + d(p_bg, y_bg)) / 2
    p_true = [0.75, 0.5, 0.75]
    focal = sum(-((1 - p) ** gamma) * math.log(p) for p in p_true) / 6  # mean over B·C·voxels
    return dice + focal


def test_hand_computed_2d():
    logits, target = tiny_case()
    value = L1WeightedDiceFocalLoss()(logits, target)
    assert value.item() == pytest.approx(expected_tiny(), rel=1e-5)
    assert value.item() == pytest.approx(0.2576909, abs=1e-6)


def test_hand_computed_gamma_zero_is_dice_plus_half_ce():
    logits, target = tiny_case()
    value = L1WeightedDiceFocalLoss(gamma=0.0)(logits, target)
    assert value.item() == pytest.approx(expected_tiny(0.0), rel=1e-5)


def test_3d_matches_2d_layout():
    logits, target = tiny_case()
    loss = L1WeightedDiceFocalLoss()
    assert loss(logits.unsqueeze(-1), target.unsqueeze(-1)).item() == pytest.approx(loss(logits, target).item())


def test_weights_carry_no_gradient():
    """The gradient equals that of the same expression with β frozen as constants."""
    logits, target = tiny_case()
    logits.requires_grad_(True)
    loss = L1WeightedDiceFocalLoss()
    loss(logits, target).backward()

    frozen = logits.detach().clone().requires_grad_(True)
    p = torch.softmax(frozen, 1)
    y = torch.zeros_like(p).scatter_(1, target, 1.0)
    beta = harmonising_weights((p - y).abs().detach(), 0.05)  # constants
    d = (2 * (beta * p * y).sum((2, 3)) + 1e-8) / ((beta * (p**2 + y**2)).sum((2, 3)) + 1e-8)
    from monai.losses import FocalLoss

    manual = (1 - d.mean()) + FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=False)(frozen, y)
    manual.backward()
    assert torch.allclose(logits.grad, frozen.grad, atol=1e-6)


def test_histogram_pools_the_batch():
    """Weights come from one histogram over the whole mini-batch, not one per sample."""
    logits, target = tiny_case()
    other_logits = torch.zeros_like(logits)          # g = 1/2 everywhere
    other_target = torch.zeros_like(target)
    batch = L1WeightedDiceFocalLoss()(torch.cat([logits, other_logits]), torch.cat([target, other_target]))
    per_sample = [L1WeightedDiceFocalLoss()(logits, target), L1WeightedDiceFocalLoss()(other_logits, other_target)]
    assert batch.item() != pytest.approx(sum(v.item() for v in per_sample) / 2, abs=1e-4)


def test_registry_builds_with_overrides():
    loss = load_registry().build("loss", "l1dfl", {"epsilon": "0.1", "gamma": "0"})
    assert loss.epsilon == 0.1 and loss.gamma == 0.0


def test_rejects_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        L1WeightedDiceFocalLoss(epsilon=0.0)


def test_autocast_computes_in_float32():
    logits, target = tiny_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = L1WeightedDiceFocalLoss()(logits.bfloat16(), target)
    assert value.dtype == torch.float32


@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.03, 0.07, 0.2, 0.5, 1.0])
def test_fast_bin_index_equals_bucketize_at_and_around_every_edge(epsilon):
    left, _ = bin_geometry(epsilon)
    below = torch.nextafter(left, torch.tensor(-1.0)).clamp(min=0)
    above = torch.nextafter(left, torch.tensor(2.0)).clamp(max=1)
    g = torch.cat([torch.rand(200_000, generator=torch.Generator().manual_seed(1)), left, below, above,
                   torch.tensor([0.0, 1.0])])
    expected = (torch.bucketize(g, left, right=True) - 1).clamp(0, left.numel() - 1)
    assert torch.equal(bin_index(g, left, epsilon).long(), expected)


def reference_l1dfl(logits, target, epsilon=0.05, gamma=2.0):
    """A plain transcription of PAPER.md 1.2: bucketize, float64 weights, MONAI's FocalLoss."""
    from monai.losses import FocalLoss

    p = torch.softmax(logits.float(), 1)
    y = torch.zeros_like(p).scatter_(1, target, 1.0)
    g = (p - y).abs().detach().reshape(-1)
    left, width = bin_geometry(epsilon)
    idx = (torch.bucketize(g, left, right=True) - 1).clamp(0, left.numel() - 1)
    counts = torch.zeros(left.numel(), dtype=torch.float64).scatter_add_(0, idx, torch.ones_like(g, dtype=torch.float64))
    beta = (g.numel() / (counts / width))[idx].float().reshape(p.shape)
    dims = tuple(range(2, p.dim()))
    d = (2 * (beta * p * y).sum(dims) + 1e-8) / ((beta * (p**2 + y**2)).sum(dims) + 1e-8)
    return (1 - d.mean()) + FocalLoss(gamma=gamma, use_softmax=True, to_onehot_y=False)(logits.float(), y)


@pytest.mark.parametrize("gamma", [2.0, 0.0])
@pytest.mark.parametrize("shape", [(3, 2, 9, 7, 5), (2, 3, 11, 6), (1, 2, 16, 16, 16)])
def test_equals_a_plain_reference_transcription(shape, gamma):
    gen = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=gen) * 3).requires_grad_(True)
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    ours = L1WeightedDiceFocalLoss(gamma=gamma)(logits, target)
    ours.backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref = reference_l1dfl(logits, target, gamma=gamma)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, logits.grad, rtol=1e-4, atol=1e-7)


def _reference_edges(epsilon):
    """The reference's edges, written out independently: float32 centres minus ε/2, clamped at 0."""
    k = int(1 / epsilon + 1)
    return torch.clamp(torch.linspace(0, 1, k) - epsilon / 2, min=0)


@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.03, 0.07])
def test_bin_edges_are_the_reference_float32_edges(epsilon):
    left, width = bin_geometry(epsilon)
    assert left.dtype == torch.float32 and torch.equal(left, _reference_edges(epsilon))
    right = torch.clamp(torch.linspace(0, 1, left.numel()) + epsilon / 2, max=1)
    assert torch.equal(width, (right - left).double())


def _logit_for(prob: float) -> float:
    """A float32 logit t with softmax([0, t])[1] == prob exactly (found by stepping ulps), or None."""
    t = torch.tensor(math.log(prob / (1 - prob)), dtype=torch.float32)
    target = torch.tensor(prob, dtype=torch.float32)
    for _ in range(4000):
        p = torch.softmax(torch.stack([torch.zeros(()), t]), 0)[1]
        if p == target:
            return t.item()
        t = torch.nextafter(t, torch.tensor(float("inf")) if p < target else torch.tensor(float("-inf")))
    return None


def test_values_on_the_edges_fall_in_the_reference_bins():
    """Probabilities exactly on the float32 edges (as softmax produces them) are binned as the reference bins them."""
    from monai.losses import FocalLoss

    left = _reference_edges(0.05)
    logits_1 = [t for t in (_logit_for(e) for e in left[1:].tolist()) if t is not None]
    assert len(logits_1) >= 10  # most edges are reachable exactly
    z1 = torch.tensor(logits_1 * 8, dtype=torch.float32)
    logits = torch.stack([torch.zeros_like(z1), z1]).reshape(1, 2, len(z1), 1, 1)
    target = (torch.arange(len(z1)) % 3 == 0).long().reshape(1, 1, len(z1), 1, 1)
    p = torch.softmax(logits, 1)
    y = torch.zeros_like(p).scatter_(1, target, 1.0)
    g = (p - y).abs().reshape(-1)
    idx = (torch.bucketize(g, left, right=True) - 1).clamp(0, left.numel() - 1)
    counts = torch.zeros(left.numel()).scatter_add_(0, idx, torch.ones_like(g))
    right = torch.clamp(torch.linspace(0, 1, left.numel()) + 0.025, max=1)
    beta = (g.numel() / (counts / (right - left).double()))[idx].float().reshape(p.shape)
    d = (2 * (beta * p * y).sum((2, 3, 4)) + 1e-8) / ((beta * (p**2 + y**2)).sum((2, 3, 4)) + 1e-8)
    reference = (1 - d.mean()) + FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=False)(logits, y)
    ours = L1WeightedDiceFocalLoss()(logits, target)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)

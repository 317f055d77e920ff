"""dl, dfl and dce against hand-computed values and against MONAI's own classes."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.registry import load_registry
from tests.losses.test_l1dfl import tiny_case

REG = load_registry()
S = 1e-5


def dice_term() -> float:
    # p_fg = 3/4, 1/2, 1/4 with y_fg = 1, 0, 0; p_bg = 1 - p_fg with y_bg = 0, 1, 1
    d_fg = (2 * 0.75 + S) / (1.5 + 1 + S)
    d_bg = (2 * 1.25 + S) / (1.5 + 2 + S)
    return 1 - (d_fg + d_bg) / 2


def sigmoid_focal(gamma: float = 2.0) -> float:
    logits, target = tiny_case()
    z = logits.reshape(2, 3).tolist()
    y = [[0, 1, 1], [1, 0, 0]]
    total = 0.0
    for c in range(2):
        for v in range(3):
            s = 1 / (1 + math.exp(-z[c][v]))
            p_t = s if y[c][v] else 1 - s
            total += -math.log(p_t) * (1 - p_t) ** gamma
    return total / 6


def softmax_focal(gamma: float = 2.0) -> float:
    return sum(-((1 - p) ** gamma) * math.log(p) for p in (0.75, 0.5, 0.75)) / 6


def test_dl_hand_computed():
    logits, target = tiny_case()
    assert REG.build("loss", "dl")(logits, target).item() == pytest.approx(dice_term(), rel=1e-6)


def test_dfl_default_is_sigmoid_focal_as_the_study_ran_it():
    logits, target = tiny_case()
    value = REG.build("loss", "dfl")(logits, target).item()
    assert value == pytest.approx(dice_term() + sigmoid_focal(), rel=1e-6)


def test_dfl_equals_installed_monai_dicefocal():
    from monai.losses import DiceFocalLoss

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 5, 6, 4, generator=gen)
    target = (torch.rand(2, 1, 5, 6, 4, generator=gen) > 0.7).long()
    ours = REG.build("loss", "dfl")(logits, target)
    theirs = DiceFocalLoss(to_onehot_y=True, softmax=True)(logits, target)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_dfl_softmax_option():
    logits, target = tiny_case()
    value = REG.build("loss", "dfl", {"focal": "softmax"})(logits, target).item()
    assert value == pytest.approx(dice_term() + softmax_focal(), rel=1e-6)


def test_dce_hand_computed():
    logits, target = tiny_case()
    ce = -(math.log(0.75) + math.log(0.5) + math.log(0.75)) / 3
    assert REG.build("loss", "dce")(logits, target).item() == pytest.approx(dice_term() + ce, rel=1e-6)


def test_dl_without_background():
    logits, target = tiny_case()
    value = REG.build("loss", "dl", {"include_background": "false"})(logits, target).item()
    assert value == pytest.approx(1 - (2 * 0.75 + S) / (2.5 + S), rel=1e-6)

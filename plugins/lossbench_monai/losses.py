"""MONAI comparison losses, configured as the L1DFL study ran them (PAPER.md §2).

All take ``loss(logits[B, C, *spatial], target[B, 1, *spatial] integer)``.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from monai.networks import one_hot

from lossbench.tensors import check_segmentation_inputs


class _Checked(torch.nn.Module):
    """Validates shapes before delegating, so a mismatch is a clear ``ValueError``."""

    name = "loss"

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        check_segmentation_inputs(logits, target, self.name)


class MonaiDiceLoss(_Checked):
    """``monai.losses.DiceLoss(to_onehot_y=True, softmax=True)`` with shape checks.

    Example:
        >>> loss = MonaiDiceLoss()
        >>> logits = torch.zeros(1, 2, 4, 4); target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
        >>> round(float(loss(logits, target)), 4)  # p = 0.5 everywhere: d_bg = 16/24, d_fg ≈ 0
        0.6667
    """

    name = "dl"

    def __init__(self, **dice_kwargs) -> None:
        super().__init__()
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, **dice_kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        return self.dice(logits.float(), target)


class DiceFocal(_Checked):
    """Dice loss + focal loss, with the focal activation chosen explicitly.

    ``focal="sigmoid"`` reproduces ``monai.losses.DiceFocalLoss(to_onehot_y=True, softmax=True)``
    exactly — the study's DFL — whose focal term is a sigmoid focal loss on the raw logits and
    the one-hot target. ``focal="softmax"`` uses MONAI's softmax focal loss instead.
    """

    name = "dfl"

    def __init__(self, *, gamma: float, focal: str, lambda_dice: float, lambda_focal: float, **dice_kwargs) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_focal < 0:
            raise ValueError("lambda_dice and lambda_focal must be >= 0")
        self.dice = DiceLoss(to_onehot_y=False, softmax=True, **dice_kwargs)
        include_background = dice_kwargs.get("include_background", True)
        self.focal = FocalLoss(
            include_background=include_background, to_onehot_y=False, gamma=gamma, use_softmax=(focal == "softmax")
        )
        self.lambda_dice = lambda_dice
        self.lambda_focal = lambda_focal

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        logits = logits.float()
        onehot = one_hot(target, num_classes=logits.shape[1])
        return self.lambda_dice * self.dice(logits, onehot) + self.lambda_focal * self.focal(logits, onehot)


class MonaiDiceCELoss(_Checked):
    """``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)`` with shape checks."""

    name = "dce"

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, **kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        return self.loss(logits.float(), target)


def dice_loss(**params) -> MonaiDiceLoss:
    return MonaiDiceLoss(**params)


def dice_focal_loss(*, gamma: float, focal: str, lambda_dice: float, lambda_focal: float, **dice_params) -> DiceFocal:
    return DiceFocal(gamma=gamma, focal=focal, lambda_dice=lambda_dice, lambda_focal=lambda_focal, **dice_params)


def dice_ce_loss(**params) -> MonaiDiceCELoss:
    return MonaiDiceCELoss(**params)

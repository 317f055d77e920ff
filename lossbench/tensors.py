"""Input checks shared by losses (built-in and third-party).

Import-light: works on tensor attributes only, torch is imported by the caller.
"""

from __future__ import annotations

from typing import Any


def check_segmentation_inputs(logits: Any, target: Any, name: str = "loss") -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[B, C, *spatial]`` (float, C >= 2) and
    ``target`` is ``[B, 1, *spatial]`` holding class indices in ``[0, C)``.
    """
    if logits.dim() < 3:
        raise ValueError(f"{name}: logits must be [B, C, *spatial] with 1-3 spatial dims, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got {logits.dtype}")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{name}: target must be [B, 1, *spatial] = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise ValueError(f"{name}: needs C >= 2 output channels (background + foreground), got {n_classes}")
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name}: target holds class indices in [{lo}, {hi}], outside [0, {n_classes - 1}]")
        if target.is_floating_point() and bool((target != target.round()).any()):
            raise ValueError(f"{name}: target must hold integer class indices, got fractional values")

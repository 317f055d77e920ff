"""Factories and validators of the networks declared in :mod:`lossbench_monai.network_specs`.

Factories are called as ``build_x(in_channels=2, out_channels=2, spatial_dims=3, **params)``
and return a MONAI ``torch.nn.Module`` mapping ``[B, in, *patch]`` to ``[B, out, *patch]``.
Validators are called as ``check_x(params, patch=(x, y, z), spatial_dims=3)`` before any
training and raise :class:`lossbench.errors.LossbenchError` with a message that says what to
change. They do not import torch or monai, so the checks themselves are cheap.

Example::

    >>> from lossbench_monai.networks import build_attunet, check_attunet
    >>> params = {"channels": (4, 8, 16), "strides": (2, 2), "kernel_size": 3,
    ...           "up_kernel_size": 3, "dropout": 0.0}
    >>> check_attunet(params, patch=(32, 32, 32), spatial_dims=3)
    >>> net = build_attunet(in_channels=2, out_channels=2, spatial_dims=3, **params)
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lossbench.components import parse_numbers
from lossbench.errors import LossbenchError

#: MONAI's UNETR cuts the input into cubes of this many voxels per side.
UNETR_VIT_PATCH = 16


# -- validation helpers ---------------------------------------------------------------------
def _patch(name: str, patch: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    if patch is None:
        return None
    return parse_numbers(patch, int, what=f"{name}: patch", count=(1, spatial_dims), broadcast=spatial_dims)


def _fmt(patch: Sequence[int]) -> str:
    return "x".join(str(p) for p in patch)


def _csv(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)


def _suggest(patch: Sequence[int], step: int) -> str:
    """``--patch 96 or 128``: the multiples of ``step`` around the first bad side."""
    bad = next(p for p in patch if p % step)
    below, above = (bad // step) * step, (bad // step + 1) * step
    return f"use --patch {below} or {above}" if below > 0 else f"use --patch {above}"


def _check_divisible(name: str, patch: tuple[int, ...] | None, step: int, what: str, knob: str) -> None:
    if patch is None or all(p % step == 0 for p in patch):
        return
    raise LossbenchError(
        f"{name}: patch {_fmt(patch)} is not divisible by {step}, the network's total stride ({what}); "
        f"{_suggest(patch, step)}, or change {knob}"
    )


def _check_kernels(name: str, params: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        k = params.get(key)
        if k is not None and (k < 1 or k % 2 == 0):
            raise LossbenchError(f"{name}: {key}={k} must be an odd positive number (e.g. {key}=3)")


def _check_dropout(name: str, key: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value < 1.0:
        raise LossbenchError(f"{name}: {key}={value} must be in [0, 1)")


def _check_levels(name: str, params: Mapping[str, Any]) -> int:
    """Channels/strides of the U-Net family; returns the total stride."""
    channels, strides = tuple(params["channels"]), tuple(params["strides"])
    if len(channels) < 2:
        raise LossbenchError(f"{name}: channels={_csv(channels)} needs at least two levels, e.g. channels=16,32")
    if any(c < 1 for c in channels):
        raise LossbenchError(f"{name}: channels={_csv(channels)} must all be positive")
    if len(strides) != len(channels) - 1:
        example = _csv((2,) * (len(channels) - 1))
        raise LossbenchError(
            f"{name}: channels has {len(channels)} levels, so strides needs {len(channels) - 1} entries "
            f"(got strides={_csv(strides)}); e.g. strides={example}"
        )
    if any(s < 1 for s in strides):
        raise LossbenchError(f"{name}: strides={_csv(strides)} must all be at least 1")
    return math.prod(strides)


# -- Attention U-Net ------------------------------------------------------------------------
def check_attunet(params: Mapping[str, Any], *, patch: Any = None, spatial_dims: int = 3, **context: Any) -> None:
    """Channels/strides lengths, odd kernels, a patch divisible by the product of the strides, and
    (MONAI's AttentionUnet uses batch norm) no 1-voxel bottleneck at batch 1."""
    total = _check_levels("attunet", params)
    _check_kernels("attunet", params, ("kernel_size", "up_kernel_size"))
    _check_dropout("attunet", "dropout", params.get("dropout"))
    patch = _patch("attunet", patch, spatial_dims)
    _check_divisible("attunet", patch, total, f"strides {_csv(params['strides'])}", "strides")
    _check_batchnorm_bottleneck("attunet", patch, total, context.get("batch_size"))


def build_attunet(
    *, in_channels: int, out_channels: int, spatial_dims: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256, 512), strides: Sequence[int] = (2, 2, 2, 2, 2),
    kernel_size: int = 3, up_kernel_size: int = 3, dropout: float = 0.0,
):
    """MONAI ``AttentionUnet`` (PAPER.md §3 defaults)."""
    from monai.networks.nets import AttentionUnet

    params = dict(channels=tuple(channels), strides=tuple(strides), kernel_size=kernel_size,
                  up_kernel_size=up_kernel_size, dropout=dropout)
    check_attunet(params, spatial_dims=spatial_dims)
    return AttentionUnet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **params)


# -- SegResNet ------------------------------------------------------------------------------
def check_segresnet(
    params: Mapping[str, Any], *, patch: Any = None, spatial_dims: int = 3, **context: Any
) -> None:
    """blocks_up one shorter than blocks_down, GroupNorm groups dividing init_filters, patch % 2**(levels-1)."""
    down, up = tuple(params["blocks_down"]), tuple(params["blocks_up"])
    if not down or any(b < 1 for b in down) or any(b < 1 for b in up):
        raise LossbenchError(
            f"segresnet: blocks_down={_csv(down)} and blocks_up={_csv(up)} need positive block counts"
        )
    if len(up) != len(down) - 1:
        raise LossbenchError(
            f"segresnet: blocks_down has {len(down)} levels, so blocks_up needs {len(down) - 1} entries "
            f"(got blocks_up={_csv(up) or 'empty'}); e.g. blocks_up={_csv((1,) * (len(down) - 1)) or 'none'}"
        )
    init, groups = params["init_filters"], params["num_groups"]
    if init < 1 or groups < 1 or init % groups:
        raise LossbenchError(
            f"segresnet: init_filters={init} must be a positive multiple of num_groups={groups} (GroupNorm)"
        )
    _check_dropout("segresnet", "dropout_prob", params.get("dropout_prob"))
    patch = _patch("segresnet", patch, spatial_dims)
    total = 2 ** (len(down) - 1)
    _check_divisible("segresnet", patch, total, f"2**(len(blocks_down)-1) with blocks_down={_csv(down)}",
                     "blocks_down")


def build_segresnet(
    *, in_channels: int, out_channels: int, spatial_dims: int,
    init_filters: int = 16, blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
    num_groups: int = 8, dropout_prob: float = 0.0, upsample_mode: str = "nontrainable",
):
    """MONAI ``SegResNet`` (PAPER.md §3 defaults: GroupNorm(8), ReLU, trilinear up-sampling)."""
    from monai.networks.nets import SegResNet

    params = dict(init_filters=init_filters, blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
                  num_groups=num_groups, dropout_prob=dropout_prob)
    check_segresnet(params, spatial_dims=spatial_dims)
    return SegResNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        init_filters=init_filters, blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
        norm=("GROUP", {"num_groups": num_groups}), dropout_prob=dropout_prob or None,
        upsample_mode=upsample_mode,
    )


# -- U-Net ----------------------------------------------------------------------------------
def check_unet(params: Mapping[str, Any], *, patch: Any = None, spatial_dims: int = 3, **context: Any) -> None:
    """As attunet; with batch norm and ``batch_size=1`` in the context, a bottleneck of one voxel is refused."""
    total = _check_levels("unet", params)
    _check_kernels("unet", params, ("kernel_size", "up_kernel_size"))
    _check_dropout("unet", "dropout", params.get("dropout"))
    if params.get("num_res_units", 0) < 0:
        raise LossbenchError(f"unet: num_res_units={params['num_res_units']} must be 0 or more")
    patch = _patch("unet", patch, spatial_dims)
    _check_divisible("unet", patch, total, f"strides {_csv(params['strides'])}", "strides")
    if params.get("norm") == "batch":
        _check_batchnorm_bottleneck("unet", patch, total, context.get("batch_size"), "or norm=instance")


def _check_batchnorm_bottleneck(name: str, patch: Any, total: int, batch_size: Any, other_fix: str = "") -> None:
    """Batch norm cannot normalise a single value per channel: refuse a 1-voxel bottleneck at batch 1."""
    if patch is not None and batch_size == 1 and all(p // total == 1 for p in patch):
        raise LossbenchError(
            f"{name}: with batch norm and a batch of 1, patch {_fmt(patch)} leaves a 1-voxel bottleneck "
            f"(total stride {total}) that batch norm cannot normalise; use a larger patch or a batch of 2 "
            f"or more{', ' + other_fix if other_fix else ''}"
        )


def build_unet(
    *, in_channels: int, out_channels: int, spatial_dims: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256, 512), strides: Sequence[int] = (2, 2, 2, 2, 2),
    num_res_units: int = 2, norm: str = "batch", act: str = "prelu",
    kernel_size: int = 3, up_kernel_size: int = 3, dropout: float = 0.0,
):
    """MONAI ``UNet`` (PAPER.md §3 defaults: 2 residual units, batch norm, PReLU)."""
    from monai.networks.nets import UNet

    params = dict(channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units, norm=norm,
                  kernel_size=kernel_size, up_kernel_size=up_kernel_size, dropout=dropout)
    check_unet(params, spatial_dims=spatial_dims)
    return UNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        channels=tuple(channels), strides=tuple(strides), kernel_size=kernel_size,
        up_kernel_size=up_kernel_size, num_res_units=num_res_units, act=act.upper(), norm=norm.upper(),
        dropout=dropout,
    )


# -- UNETR ----------------------------------------------------------------------------------
def check_unetr(params: Mapping[str, Any], *, patch: Any = None, spatial_dims: int = 3, **context: Any) -> None:
    """img_size a multiple of 16, hidden_size divisible by num_heads, and patch == img_size."""
    if importlib.util.find_spec("einops") is None:
        raise LossbenchError("unetr: MONAI's UNETR needs the einops package; install it (pip install einops)")
    img = params["img_size"]
    if img < UNETR_VIT_PATCH or img % UNETR_VIT_PATCH:
        raise LossbenchError(
            f"unetr: img_size={img} must be a multiple of {UNETR_VIT_PATCH} (the ViT patch), e.g. img_size=128"
        )
    hidden, heads = params["hidden_size"], params["num_heads"]
    if heads < 1 or hidden < 1 or hidden % heads:
        raise LossbenchError(f"unetr: hidden_size={hidden} must be divisible by num_heads={heads}")
    if params["feature_size"] < 1 or params["mlp_dim"] < 1:
        raise LossbenchError("unetr: feature_size and mlp_dim must be positive")
    _check_dropout("unetr", "dropout_rate", params.get("dropout_rate"))
    patch = _patch("unetr", patch, spatial_dims)
    if patch is not None and any(p != img for p in patch):
        raise LossbenchError(
            f"unetr: the network is built for img_size {img}, so the patch must be {_fmt((img,) * len(patch))} "
            f"(got {_fmt(patch)}); use --patch {img}, or set img_size to the patch (a multiple of "
            f"{UNETR_VIT_PATCH})"
        )


def build_unetr(
    *, in_channels: int, out_channels: int, spatial_dims: int,
    img_size: int = 128, feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072,
    num_heads: int = 12, norm_name: str = "batch", res_block: bool = True, proj_type: str = "conv",
    dropout_rate: float = 0.0,
):
    """MONAI ``UNETR``, configuration (a) of the reference code by default (PAPER.md §3)."""
    from monai.networks.nets import UNETR

    params = dict(img_size=img_size, feature_size=feature_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                  num_heads=num_heads, dropout_rate=dropout_rate)
    check_unetr(params, spatial_dims=spatial_dims)
    return UNETR(
        in_channels=in_channels, out_channels=out_channels, img_size=(img_size,) * spatial_dims,
        feature_size=feature_size, hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
        proj_type=proj_type, norm_name=norm_name, conv_block=True, res_block=res_block,
        dropout_rate=dropout_rate, spatial_dims=spatial_dims,
    )

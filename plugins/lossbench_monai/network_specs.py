"""The study's networks as registry components (declarations only: no torch, no monai).

Defaults are the configurations of the reference code (PAPER.md §3); every knob is a
parameter. Each network carries its own small ``cpu`` preset (used by ``--preset cpu``), so the
central presets know no network.

The factories and validators live in :mod:`lossbench_monai.networks` and are imported only
when a network is built or checked. Each factory is called as
``factory(in_channels=2, out_channels=2, spatial_dims=3, **params)``; each validator as
``validator(params, patch=(x, y, z), spatial_dims=3)`` before any training starts.
"""

from __future__ import annotations

from lossbench import Component, Param

_MONAI = "Cardoso et al., MONAI: An open-source framework for deep learning in healthcare, arXiv:2211.02701 (2022)."
_MOD = "lossbench_monai.networks"

_channels = Param(
    "channels", tuple, (16, 32, 64, 128, 256, 512),
    "Feature channels per resolution level, top to bottom.", item=int,
)
_strides = Param(
    "strides", tuple, (2, 2, 2, 2, 2),
    "Down-sampling stride between levels (one fewer than channels); the patch must be divisible "
    "by their product.", item=int,
)
_kernel = Param("kernel_size", int, 3, "Convolution kernel size.")
_up_kernel = Param("up_kernel_size", int, 3, "Kernel size of the up-sampling convolutions.")

ATTUNET = Component(
    kind="network",
    name="attunet",
    summary="Attention U-Net (MONAI AttentionUnet), the study's main network.",
    factory=f"{_MOD}:build_attunet",
    validator=f"{_MOD}:check_attunet",
    presets={"cpu": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}},
    params=(
        _channels,
        _strides,
        _kernel,
        _up_kernel,
        Param("dropout", float, 0.0, "Dropout probability."),
    ),
    description=(
        "U-Net with additive attention gates on the skip connections. Paper configuration: "
        "channels 16..512, five stride-2 levels (total stride 32, so patches must be multiples of 32), "
        "kernel 3, no dropout."
    ),
    citation=(
        "Oktay et al., Attention U-Net: Learning where to look for the pancreas, MIDL 2018, "
        "arXiv:1804.03999. " + _MONAI
    ),
)

SEGRESNET = Component(
    kind="network",
    name="segresnet",
    summary="SegResNet (MONAI), residual encoder-decoder from the BraTS 2018 winner.",
    factory=f"{_MOD}:build_segresnet",
    validator=f"{_MOD}:check_segresnet",
    presets={"cpu": {"init_filters": 8, "blocks_down": (1, 1, 2), "blocks_up": (1, 1)}},
    params=(
        Param("init_filters", int, 16, "Channels of the first level; doubled at each down level."),
        Param("blocks_down", tuple, (1, 2, 2, 4), "Residual blocks per encoder level.", item=int),
        Param("blocks_up", tuple, (1, 1, 1), "Residual blocks per decoder level (one fewer than blocks_down).",
              item=int),
        Param("num_groups", int, 8, "Groups of the GroupNorm layers (init_filters must be divisible by it)."),
        Param("dropout_prob", float, 0.0, "Dropout probability after the first convolution (0 = none)."),
        Param("upsample_mode", str, "nontrainable", "Decoder up-sampling.",
              choices=("nontrainable", "deconv", "pixelshuffle")),
    ),
    description=(
        "Paper configuration: init_filters 16, blocks_down 1,2,2,4, blocks_up 1,1,1, GroupNorm(8), "
        "ReLU, trilinear (non-trainable) up-sampling, no dropout. Total stride 2**(len(blocks_down)-1) = 8."
    ),
    citation=(
        "Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, "
        "BrainLes 2018, arXiv:1810.11654. " + _MONAI
    ),
)

UNET = Component(
    kind="network",
    name="unet",
    summary="Residual U-Net (MONAI UNet) with batch norm.",
    factory=f"{_MOD}:build_unet",
    validator=f"{_MOD}:check_unet",
    presets={"cpu": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1}},
    params=(
        _channels,
        _strides,
        Param("num_res_units", int, 2, "Residual units per block (0 = plain convolutions)."),
        Param("norm", str, "batch", "Normalisation layer.", choices=("batch", "instance")),
        Param("act", str, "prelu", "Activation.", choices=("prelu", "relu", "leakyrelu")),
        _kernel,
        _up_kernel,
        Param("dropout", float, 0.0, "Dropout probability."),
    ),
    description=(
        "Paper configuration: channels 16..512, five stride-2 levels (total stride 32), "
        "2 residual units, batch norm, PReLU. With batch norm the bottleneck needs more than one "
        "value per channel: a batch of 1 needs a patch larger than the total stride."
    ),
    citation=(
        "Kerfoot et al., Left-ventricle quantification using residual U-Net, STACOM 2018; "
        "Ronneberger et al., U-Net, MICCAI 2015. " + _MONAI
    ),
)

UNETR = Component(
    kind="network",
    name="unetr",
    summary="UNETR (MONAI): ViT encoder with a convolutional decoder; fixed input size.",
    factory=f"{_MOD}:build_unetr",
    validator=f"{_MOD}:check_unetr",
    # img_size must equal the patch (check_unetr says so): the cpu preset's patch is 48.
    presets={"cpu": {"img_size": 48, "feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4}},
    params=(
        Param("img_size", int, 128, "Cubic input size the ViT is built for; the patch must equal it."),
        Param("feature_size", int, 16, "Decoder feature size."),
        Param("hidden_size", int, 768, "ViT hidden size (divisible by num_heads)."),
        Param("mlp_dim", int, 3072, "ViT MLP size."),
        Param("num_heads", int, 12, "ViT attention heads."),
        Param("norm_name", str, "batch", "Decoder normalisation.", choices=("batch", "instance")),
        Param("res_block", bool, True, "Residual blocks in the decoder."),
        Param("proj_type", str, "conv", "ViT patch embedding.", choices=("conv", "perceptron")),
        Param("dropout_rate", float, 0.0, "ViT dropout."),
    ),
    description=(
        "Paper configuration (a) of the reference code: img_size 128 (so the patch must be 128), "
        "16^3 ViT patches, feature 16, hidden 768, MLP 3072, 12 heads, batch norm, residual blocks, "
        "conv patch embedding. Configuration (b) is feature_size=8 hidden_size=192 mlp_dim=768 "
        "num_heads=3 norm_name=instance; (c) is feature_size=8 hidden_size=256 mlp_dim=1024 num_heads=4 "
        "norm_name=instance. No SSL-pretrained weights are loaded."
    ),
    citation=(
        "Hatamizadeh et al., UNETR: Transformers for 3D medical image segmentation, WACV 2022, "
        "arXiv:2103.10504. " + _MONAI
    ),
)

NETWORKS: list[Component] = [ATTUNET, SEGRESNET, UNET, UNETR]

"""lossbench's built-in L1DFL plugin: the L1-weighted Dice Focal Loss.

Discovered through the ``lossbench`` entry point ``l1dfl``. The loss itself lives in
:mod:`lossbench_l1dfl.loss` and is imported only when built.
"""

from __future__ import annotations

import lossbench
from lossbench import Component, Param

L1DFL = Component(
    kind="loss",
    name="l1dfl",
    summary="L1-weighted Dice Focal Loss: Dice weighted by the rarity of each voxel's |p − y|, plus softmax focal",
    factory="lossbench_l1dfl.loss:L1WeightedDiceFocalLoss",
    params=(
        Param("epsilon", float, 0.05, "Histogram bin width ε on [0, 1] (bins centred on 0, ε, …, 1; the study: 0.05)."),
        Param("gamma", float, 2.0, "Focal exponent γ (0 gives plain softmax cross-entropy, the 'L1ghdl_ce' variant)."),
        Param("smooth", float, 1e-8, "Smoothing s in the weighted Dice ratio."),
        Param("lambda_dice", float, 1.0, "Weight of the weighted Dice term."),
        Param("lambda_focal", float, 1.0, "Weight of the focal term."),
        Param("global_histogram", bool, False, "Under DDP (--nproc > 1), pool the |p − y| histogram over every "
              "rank's batch; false keeps each rank's own, as the reference on each GPU."),
    ),
    formula=(
        "p = softmax(logits), y = one-hot(target), g = |p − y| over every (b, c, voxel); N = number of g values\n"
        "bins: K = int(1/ε + 1) centres c_k = k/(K−1); left edge l_k = max(c_k − ε/2, 0), right r_k = min(c_k + ε/2, 1)\n"
        "g goes to the bin with the largest l_k ≤ g; n_k = count (int64); w_k = r_k − l_k; GD_k = n_k / w_k\n"
        "β_i = N / GD_k(i) = N·w_k(i) / n_k(i)   (constants: no gradient flows through β)\n"
        "d[b,c] = (2 Σ β·p·y + s) / (Σ β·(p² + y²) + s)\n"
        "L1DFL = lambda_dice·(1 − mean over b,c of d[b,c]) + lambda_focal·FL_γ, "
        "FL_γ = mean over b,c,voxels of −(1 − p_c)^γ·y_c·log p_c"
    ),
    citation=(
        "Dzikunu OK, Ahamed S, Toosi A, Li X, Rahmim A. Adaptive voxel-weighted loss using L1 norms in deep "
        "neural networks for detection and segmentation of prostate cancer lesions in PET/CT images. "
        "arXiv:2502.02756 (2025). Gradient harmonisation: Li B, Liu Y, Wang X. Gradient harmonized "
        "single-stage detector. AAAI 2019."
    ),
    description=(
        "Reproduces the authors' reference code (pca_segment, segmentation/losses.py, versions 3697307/28d8693): "
        "softmax, one-hot over C channels, the |p − y| histogram pooled over the whole local mini-batch and all "
        "channels (both for C = 2), half-width end bins, β = N·w/n, squared-denominator weighted Dice per sample "
        "and channel with the background channel included, plus MONAI's softmax focal loss (mean over B·C·voxels). "
        "Counts are int64: the reference's float32 counts stop being exact above 2^24 voxels per bin."
    ),
)


@lossbench.hookimpl
def register_losses(register):
    register(L1DFL)

"""Declarations of the MONAI comparison losses (import-light: no torch here)."""

from __future__ import annotations

from lossbench import Component, Param

_MONAI = (
    "Cardoso MJ et al. MONAI: An open-source framework for deep learning in healthcare. "
    "arXiv:2211.02701 (2022)."
)
_DICE = (
    "Milletari F, Navab N, Ahmadi SA. V-Net: Fully convolutional neural networks for volumetric "
    "medical image segmentation. 3DV 2016."
)
_FOCAL = "Lin TY, Goyal P, Girshick R, He K, Dollar P. Focal loss for dense object detection. ICCV 2017."
_STUDY = (
    "Dzikunu OK et al. Adaptive voxel-weighted loss using L1 norms in deep neural networks for "
    "detection and segmentation of prostate cancer lesions in PET/CT images. arXiv:2502.02756 (2025)."
)
_COMPANION = (
    "Dzikunu OK et al. Comprehensive evaluation of quantitative measurements from automated deep "
    "segmentations of PSMA PET/CT images. arXiv:2504.16237 (IEEE TRPMS 2025)."
)

_DICE_PARAMS = (
    Param("include_background", bool, True, "Include channel 0 (background) in the Dice mean, as the study did."),
    Param("squared_pred", bool, False, "Square p and y in the Dice denominator (the study: no)."),
    Param("smooth_nr", float, 1e-5, "Constant added to the Dice numerator."),
    Param("smooth_dr", float, 1e-5, "Constant added to the Dice denominator."),
    Param("batch", bool, False, "Sum over the batch before dividing (the study: per sample)."),
)

_DICE_FORMULA = (
    "d[b,c] = (2 Σ p·y + smooth_nr) / (Σ p + Σ y + smooth_dr), p = softmax(logits), y = one-hot(target)\n"
    "DL = 1 − mean over b and c of d[b,c]   (squared_pred: Σ p² + Σ y² in the denominator)"
)

LOSSES = [
    Component(
        kind="loss",
        name="dl",
        summary="Dice loss (MONAI DiceLoss, softmax, one-hot, background included) as the study ran it",
        factory="lossbench_monai.losses:dice_loss",
        params=_DICE_PARAMS,
        formula=_DICE_FORMULA,
        citation=f"{_DICE} Configuration: {_STUDY} Implementation: {_MONAI}",
        description=(
            "monai.losses.DiceLoss(to_onehot_y=True, softmax=True) with MONAI's defaults, which is how "
            "the study configured its Dice loss baseline (both channels, linear denominator, 1e-5 smoothing)."
        ),
    ),
    Component(
        kind="loss",
        name="dfl",
        summary="Dice + focal loss as the study ran it (MONAI DiceFocalLoss: sigmoid focal term on one-hot)",
        factory="lossbench_monai.losses:dice_focal_loss",
        params=(
            *_DICE_PARAMS,
            Param("gamma", float, 2.0, "Focal exponent γ."),
            Param("focal", str, "sigmoid",
                  "Focal term: 'sigmoid' = what MONAI's DiceFocalLoss computes even with softmax=True "
                  "(the study's behaviour); 'softmax' = a softmax focal loss consistent with the Dice term.",
                  choices=("sigmoid", "softmax")),
            Param("lambda_dice", float, 1.0, "Weight of the Dice term."),
            Param("lambda_focal", float, 1.0, "Weight of the focal term."),
        ),
        formula=(
            _DICE_FORMULA.replace("DL =", "Dice =") + "\n"
            "focal='sigmoid': FL = mean over b,c,voxels of BCEwithLogits(z, y)·(1 − p_t)^γ, p_t = σ(z) if y=1 else 1 − σ(z)\n"
            "focal='softmax': FL = mean over b,c,voxels of −(1 − p_c)^γ · y_c · log p_c, p = softmax(z)\n"
            "DFL = lambda_dice·Dice + lambda_focal·FL"
        ),
        citation=f"{_DICE} {_FOCAL} Configuration: {_STUDY} Implementation: {_MONAI}",
        description=(
            "The study used monai.losses.DiceFocalLoss(to_onehot_y=True, softmax=True). MONAI (1.3.x, "
            "and still 1.6.1, the version lossbench pins) applies `softmax` to the Dice term only: its focal "
            "term is a *sigmoid* focal loss on the raw logits against the one-hot target, both channels, "
            "mean over B·C·voxels. lossbench builds that explicitly (focal='sigmoid', the default), so the "
            "behaviour does not change with the MONAI version; focal='softmax' gives the softmax-consistent "
            "variant (the focal term L1DFL uses)."
        ),
    ),
    Component(
        kind="loss",
        name="dce",
        summary="Dice + cross-entropy loss (MONAI DiceCELoss, softmax, one-hot) as the companion study ran it",
        factory="lossbench_monai.losses:dice_ce_loss",
        params=(
            *_DICE_PARAMS,
            Param("lambda_dice", float, 1.0, "Weight of the Dice term."),
            Param("lambda_ce", float, 1.0, "Weight of the cross-entropy term."),
        ),
        formula=(
            _DICE_FORMULA.replace("DL =", "Dice =") + "\n"
            "CE = mean over b,voxels of −log softmax(z)[target]\n"
            "DCE = lambda_dice·Dice + lambda_ce·CE"
        ),
        citation=f"{_COMPANION} Implementation: {_MONAI}",
        description="monai.losses.DiceCELoss(to_onehot_y=True, softmax=True), as in the companion study.",
    ),
]

"""A third-party lossbench plugin: the Focal Tversky loss (Abraham & Khan 2019).

Kept import-light: torch is imported by ``loss.py`` only when the loss is built.
"""

import lossbench
from lossbench import Component, Param


@lossbench.hookimpl
def register_losses(register):
    register(Component(
        kind="loss",
        name="focal_tversky",
        summary="Focal Tversky loss: (1 − Tversky index)^(1/γ) over foreground channels",
        factory="lossbench_focal_tversky.loss:FocalTverskyLoss",
        params=(
            Param("alpha", float, 0.7, "Weight of false positives in the Tversky index."),
            Param("beta", float, 0.3, "Weight of false negatives in the Tversky index."),
            Param("gamma", float, 4 / 3, "Focal exponent: the loss is (1 − TI)^(1/γ)."),
            Param("smooth", float, 1e-5, "Smoothing constant."),
        ),
        formula="TI = (Σpy + s) / (Σpy + α·Σp(1−y) + β·Σ(1−p)y + s);  FTL = mean over b, c≥1 of (1 − TI)^(1/γ)",
        citation="Abraham N, Khan NM. A novel focal Tversky loss function with improved attention U-Net for "
                 "lesion segmentation. ISBI 2019.",
    ))

"""Pictures a reviewer looks at: the PET maximum-intensity projection with the lesions outlined.

:func:`mip_png` draws the coronal (anterior) MIP of the PET, inverted grey as PET readers show it,
with the outlines of

- ground-truth lesions that were detected (SUVmax criterion: their hottest voxel is predicted), green;
- ground-truth lesions that were missed (false negatives), blue;
- predicted components that touch no ground-truth voxel (false positives), red;
- the rest of the prediction (components that touch a lesion), yellow, thin.

Each class is projected along the same axis as the PET and outlined with ``contour``, so a lesion
behind another shows where it would on the MIP. NumPy, cc3d and matplotlib (Agg) only.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["COLOURS", "lesion_classes", "mip_png"]

COLOURS = {"TP": "#1a9850", "FN": "#2166ac", "FP": "#d73027", "pred": "#fdae61"}


def lesion_classes(gt: np.ndarray, pred: np.ndarray, pet: np.ndarray, connectivity: int = 18) -> dict[str, np.ndarray]:
    """Boolean volumes of the four outlined classes (see the module docstring)."""
    import cc3d

    gt, pred = np.asarray(gt) > 0, np.asarray(pred) > 0
    out = {k: np.zeros(gt.shape, bool) for k in COLOURS}
    labels, n = cc3d.connected_components(gt.astype(np.uint8), connectivity=connectivity, return_N=True)
    if n:
        flat = labels.ravel()
        values = np.where(flat > 0, np.asarray(pet, np.float64).ravel(), -np.inf)
        order = np.lexsort((-values, flat))  # per component, hottest voxel first
        first = order[np.r_[True, flat[order][1:] != flat[order][:-1]]]
        hottest = {int(flat[i]): int(i) for i in first if flat[i] > 0}
        detected = np.zeros(n + 1, bool)
        pred_flat = pred.ravel()
        for comp, voxel in hottest.items():
            detected[comp] = bool(pred_flat[voxel])
        out["TP"] = detected[labels]
        out["FN"] = gt & ~out["TP"]
    plabels, pn = cc3d.connected_components(pred.astype(np.uint8), connectivity=connectivity, return_N=True)
    if pn:
        touches = np.zeros(pn + 1, bool)
        touches[np.unique(plabels[gt & pred])] = True
        touches[0] = False
        out["FP"] = pred & ~touches[plabels]
        out["pred"] = pred & touches[plabels]
    return out


def to_ras(affine: np.ndarray, *arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[float, ...]]:
    """The arrays reoriented to RAS (x right, y anterior, z head) by ``affine``, and their spacing."""
    import nibabel as nib

    current = nib.io_orientation(np.asarray(affine))
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt("RAS"))
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(zooms[int(i)]) for i in current[:, 0].argsort())
    return [nib.orientations.apply_orientation(np.asarray(a), transform) for a in arrays], spacing


def mip_png(pet: np.ndarray, gt: np.ndarray, pred: np.ndarray, affine: np.ndarray, *, title: str = "",
            suv_max: float = 10.0) -> bytes:
    """PNG bytes of the coronal PET MIP (projected anterior-posterior, head up) with the outlines.

    ``pet``, ``gt`` and ``pred`` share one grid, whose voxel-to-world ``affine`` orients them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (pet, gt, pred), spacing = to_ras(affine, np.asarray(pet, np.float32), gt, pred)
    axis = 1
    classes = lesion_classes(gt, pred, pet)
    keep = [a for a in range(3) if a != axis]
    mip = pet.max(axis=axis).T  # rows: z (head up after origin="lower"), columns: the other axis
    aspect = float(spacing[keep[1]]) / float(spacing[keep[0]])
    height = 6.0
    width = max(2.5, height * mip.shape[1] / (mip.shape[0] * aspect))
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    try:
        ax.imshow(mip, cmap="gray_r", vmin=0.0, vmax=suv_max, origin="lower", aspect=aspect, interpolation="nearest")
        counts = {}
        for name, colour in COLOURS.items():
            proj = classes[name].max(axis=axis).T
            counts[name] = _components(classes[name]) if name != "pred" else 0
            if proj.any():
                ax.contour(proj.astype(float), levels=[0.5], colors=[colour],
                           linewidths=0.8 if name == "pred" else 1.4, origin="lower")
        ax.set_axis_off()
        legend = f"TP {counts['TP']}  FN {counts['FN']}  FP {counts['FP']}"
        ax.set_title(f"{title}\n{legend}" if title else legend, fontsize=9)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _components(mask: np.ndarray) -> int:
    import cc3d

    if not mask.any():
        return 0
    return int(cc3d.connected_components(mask.astype(np.uint8), connectivity=18, return_N=True)[1])

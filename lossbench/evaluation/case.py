"""Evaluation of one case: Dice, lesion detection under three criteria, FP/FN volumes, biomarkers.

Everything follows PAPER.md §6 (the study's reference code), with the policies below stated once.

Conventions
-----------
- Arrays are indexed (x, y, z) and ``spacing`` is in mm, one value per axis. A voxel's volume in mL is
  ``prod(spacing) / 1000``. 2-D arrays (x, y) are accepted and evaluated as a single slice of
  thickness ``spacing[2]`` if three spacings are given, else 1 mm.
- Connected components come from ``cc3d`` with ``connectivity`` 6, 18 (default, as in the study) or 26.
  For 2-D arrays 4 and 8 are accepted too; 6 means 4 and 18 or 26 mean 8 in the plane.
- **Label order.** Components are numbered in the order in which a Fortran-order scan (x fastest, the
  NIfTI on-disk order) first meets them. ``cc3d`` numbers components in the order its scan of memory
  meets them, and the reference's arrays (SimpleITK arrays transposed to (x, y, z)) are
  Fortran-ordered, so "lowest label" tie-breaks agree with the reference. We renumber explicitly, so
  the result does not depend on the memory layout of the arrays passed in.
- All per-component statistics are computed from the foreground voxels only (``bincount`` and
  sorting over the labelled voxels), never by building one full-volume mask per component.

Segmentation metrics (per case)
-------------------------------
- ``dice`` = 2|P ∩ G| / (|P| + |G|). Policy: both masks empty -> ``empty_dice`` (NaN by default: the
  study's unguarded 0/0; pass 1.0 to score agreement on "nothing" as perfect); GT empty and
  prediction non-empty -> 0.
- ``overlap_ml`` = |P ∩ G| in mL: with ``gt_tmtv_ml`` and ``pred_tmtv_ml`` it gives the pooled
  (global) Dice over a set of cases, 2 Σ|P ∩ G| / (Σ|P| + Σ|G|) (:func:`lossbench.evaluation.summarize`).
- ``fp_volume_ml``: total volume of predicted components that share no voxel with the GT foreground;
  ``fn_volume_ml``: total volume of GT components that share no voxel with the prediction (autoPET).

Lesion detection (PAPER.md §6.2); G_j are GT components, P_i predicted components, IoU on voxels
---------------------------------------------------------------------------------------------
- **Criterion 1** (any overlap): P_i is TP if it shares a voxel with the GT foreground, else FP.
  FN = number of G_j sharing no voxel with the prediction. TP counts predictions, so TP + FN may
  differ from the number of GT lesions (as in the reference).
- **Criterion 2** (IoU): for each P_i in label order, its best match is the G_j of highest IoU among
  all GT lesions (ties to the lowest label: "better" is strictly greater; a P_i with no overlap has
  no match). P_i is TP if that IoU >= ``iou_threshold`` and G_j is still in the pool; G_j then leaves
  the pool. Otherwise P_i is FP. FN = lesions left in the pool.
- **Criterion 3** (the study's SUVmax criterion, the default headline): best match as in criterion 2;
  G_j's SUVmax voxel is the argmax of PET inside G_j, ties to the first index in C order of (x, y, z)
  (NumPy's ``argmax`` on the (x, y, z) array). P_i is TP if that voxel lies inside P_i and G_j is
  still in the pool; G_j then leaves the pool. Otherwise P_i is FP (in particular a P_i without any
  overlap). FN = lesions left in the pool.

*The pool.* As in the reference, the best match is searched among **all** GT lesions, not only those
left in the pool; the pool only decides FN and prevents a lesion from being matched twice. A P_i
whose best match already left the pool is an FP (the reference would raise an error there). Under
criterion 3 this cannot happen, since the components are disjoint and only one of them can hold the
lesion's SUVmax voxel; under criterion 2 it needs ``iou_threshold`` < 0.5.

*Deliberate deviations from the reference, in corner cases only:* the SUVmax voxel is the argmax of
PET *inside* the lesion (the reference takes the argmax of PET x mask over the whole volume, which
differs only when every PET value in the lesion is <= 0); likewise the SUVmax *value* of a mask
(``suvmax``, ``gt_suvmax``, ``pred_suvmax``, the per-lesion ``suvmax``) is the maximum of PET *inside*
the mask, where the reference's max of PET x mask gives 0 when every PET value in the mask is <= 0
(e.g. -0.003 from a reconstruction, accepted by the psma dataset's ``negative_suv_tolerance``): the
value a lesion actually has, not the background's 0; a predicted component with no overlap is
always FP (the reference tests voxel (0, 0, 0) and then fails).

Per-case rates, for each criterion k: ``sensitivity_ck`` = TP/(TP+FN), ``precision_ck`` = TP/(TP+FP),
``f1_ck`` = 2TP/(2TP+FP+FN); NaN when the denominator is 0. The headline columns ``tp``, ``fp``,
``fn``, ``sensitivity``, ``precision``, ``f1`` repeat the chosen ``criterion`` (3 by default).

Patient-level biomarkers (PAPER.md §6.3), for the GT (``gt_*``) and the prediction (``pred_*``)
-------------------------------------------------------------------------------------------------
``suvmax`` (max PET in the mask, 0 if empty), ``suvmean`` (mean PET in the mask, 0 if empty),
``tmtv_ml`` (voxels x voxel volume), ``tla`` (sum of PET in the mask x voxel volume, SUV·mL; equals
sum_k SUVmean_k x MTV_k), ``lesion_count`` (number of components), ``dmax_cm`` (largest distance between
two foreground voxel centres, in cm, 0 if fewer than two voxels; exact, see
:mod:`lossbench.evaluation.geometry`).

Per-lesion table (one row per GT lesion, in label order)
--------------------------------------------------------
``lesion_id`` (GT label), ``n_voxels``, ``volume_ml``, ``size_class`` (the reference's per-lesion
classes, see :func:`lossbench.evaluation.strata.lesion_size_class`), ``suvmax``, ``suvmean``, ``tla``,
``centroid_x/y/z`` (voxel units), ``hottest_x/y/z`` (the SUVmax voxel used by criterion 3),
``n_pred_overlapping`` (predicted components touching the lesion), ``best_iou``, ``pred_volume_ml``,
``pred_suvmax``, ``pred_suvmean``, ``pred_tla`` (over the union U of the predicted components
overlapping the lesion; NaN when there is none), ``dice`` = 2|G_j ∩ U| / (|G_j| + |U|) (0 when U is
empty), ``detected_c1/c2/c3`` (overlapped / left the pool under criterion 2 / 3), ``detected`` (the
chosen criterion), ``matched_pred_c3`` (label of the predicted component that detected it under
criterion 3, 0 if none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lossbench.errors import LossbenchError
from lossbench.evaluation.geometry import dmax_mm
from lossbench.evaluation.strata import lesion_size_class

__all__ = [
    "label_biomarkers",
    "CASE_COLUMNS",
    "CRITERIA",
    "LESION_COLUMNS",
    "CaseEvaluation",
    "evaluate_case",
]

CRITERIA = (1, 2, 3)
_CONNECTIVITY_3D = (6, 18, 26)
_CONNECTIVITY_2D = {4: 6, 8: 18, 6: 6, 18: 18, 26: 26}

_RATES = ("tp", "fp", "fn", "sensitivity", "precision", "f1")
_BIOMARKERS = ("suvmax", "suvmean", "tmtv_ml", "tla", "lesion_count", "dmax_cm")

#: Columns of a per-case row, in order (strata columns are added by :func:`stratify`): what a reviewer
#: reads first (case, Dice, F1, TP/FP/FN), the evaluation settings (criterion, IoU, connectivity) last.
CASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "dice",
    "f1",
    "tp",
    "fp",
    "fn",
    "sensitivity",
    "precision",
    "fp_volume_ml",
    "fn_volume_ml",
    "overlap_ml",
    *(f"{who}_{name}" for who in ("gt", "pred") for name in _BIOMARKERS),
    *(f"{name}_c{k}" for k in CRITERIA for name in _RATES),
    "criterion",
    "iou_threshold",
    "connectivity",
    "voxel_volume_ml",
)

#: Columns of a per-lesion row, in order.
LESION_COLUMNS: tuple[str, ...] = (
    "case_id",
    "lesion_id",
    "n_voxels",
    "volume_ml",
    "size_class",
    "suvmax",
    "suvmean",
    "tla",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "hottest_x",
    "hottest_y",
    "hottest_z",
    "n_pred_overlapping",
    "best_iou",
    "pred_volume_ml",
    "pred_suvmax",
    "pred_suvmean",
    "pred_tla",
    "dice",
    "detected_c1",
    "detected_c2",
    "detected_c3",
    "detected",
    "matched_pred_c3",
)


@dataclass(frozen=True)
class CaseEvaluation:
    """The result of :func:`evaluate_case`.

    ``case`` is one row of the per-case table (keys :data:`CASE_COLUMNS`); ``lesions`` holds one row
    per GT lesion (keys :data:`LESION_COLUMNS`).
    """

    case: dict[str, object]
    lesions: list[dict[str, object]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- checks


def _prefix(case_id: str) -> str:
    return f"case {case_id!r}: " if case_id else ""


def _contiguous(mask: np.ndarray) -> np.ndarray:
    """``mask`` itself when C- or Fortran-contiguous (cc3d scans either without a copy), else a C copy."""
    if mask.flags.c_contiguous or mask.flags.f_contiguous:
        return mask
    return np.ascontiguousarray(mask)


def _as_mask(a: object, what: str, case_id: str) -> np.ndarray:
    """A binary array as a contiguous bool array; LossbenchError for values other than 0/1."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return _contiguous(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise LossbenchError(f"{_prefix(case_id)}{what} mask has dtype {arr.dtype}; expected a binary mask")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        ok = arr.size == 0 or int(arr.max()) <= 1
    else:
        ok = bool(((arr == 0) | (arr == 1)).all())
    if not ok:
        bad = arr[(arr != 0) & (arr != 1)]
        shown = ", ".join(f"{v:g}" for v in np.unique(bad)[:5])
        raise LossbenchError(
            f"{_prefix(case_id)}{what} mask is not binary: it holds values other than 0 and 1 ({shown})"
        )
    return _contiguous(arr != 0)


def _check_pet(a: object, case_id: str) -> np.ndarray:
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise LossbenchError(f"{_prefix(case_id)}PET has dtype {arr.dtype}; expected real SUV values")
    if np.issubdtype(arr.dtype, np.floating) and not math.isfinite(float(arr.sum(dtype=np.float64))):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        if n_nan or n_inf:
            raise LossbenchError(
                f"{_prefix(case_id)}PET holds non-finite values ({n_nan} NaN, {n_inf} infinite voxels)"
            )
    return arr


def _check_spacing(spacing: Sequence[float], ndim: int, case_id: str) -> tuple[float, float, float]:
    try:
        sp = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise LossbenchError(f"{_prefix(case_id)}spacing must be a sequence of numbers, got {spacing!r}") from None
    if ndim == 2 and len(sp) == 2:
        sp.append(1.0)
    if len(sp) != 3 or (ndim == 3 and len(spacing) != 3):
        raise LossbenchError(f"{_prefix(case_id)}spacing {tuple(spacing)} does not match a {ndim}-D image")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise LossbenchError(f"{_prefix(case_id)}spacing must be positive and finite, got {tuple(spacing)}")
    return sp[0], sp[1], sp[2]


def _check_options(connectivity: int, ndim: int, iou_threshold: float, criterion: int, empty_dice: float) -> int:
    allowed = _CONNECTIVITY_2D if ndim == 2 else dict.fromkeys(_CONNECTIVITY_3D)
    if connectivity not in allowed:
        raise LossbenchError(
            f"connectivity {connectivity} is not valid for {ndim}-D images; "
            f"use one of {', '.join(map(str, allowed))}"
        )
    if not (0.0 < float(iou_threshold) <= 1.0):
        raise LossbenchError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    if criterion not in CRITERIA:
        raise LossbenchError(f"detection criterion must be 1, 2 or 3, got {criterion}")
    if not (math.isnan(empty_dice) or 0.0 <= empty_dice <= 1.0):
        raise LossbenchError(f"empty_dice must be NaN or in [0, 1], got {empty_dice}")
    return _CONNECTIVITY_2D[connectivity] if ndim == 2 else connectivity


# ------------------------------------------------------------------------------------------- helpers


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _rates(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    return _ratio(tp, tp + fn), _ratio(tp, tp + fp), _ratio(2 * tp, 2 * tp + fp + fn)


def _group_argmax(labels: np.ndarray, values: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """For each label 1..n, the position of its largest value (ties: smallest ``key``); index 0 unused."""
    pos = np.zeros(n + 1, dtype=np.int64)
    if labels.size == 0:
        return pos
    order = np.lexsort((key, -values, labels))
    lab = labels[order]
    first = np.ones(lab.size, dtype=bool)
    first[1:] = lab[1:] != lab[:-1]
    pos[lab[first]] = order[first]
    return pos


def _group_max(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Largest value per label 1..n (-inf for an absent label); index 0 unused."""
    out = np.full(n + 1, -np.inf)
    if labels.size:
        order = np.argsort(labels, kind="stable")
        lab = labels[order]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        out[lab[starts]] = np.maximum.reduceat(values[order], starts)
    return out


@dataclass
class _Mask:
    """One labelled mask; the per-voxel arrays run over its foreground voxels in Fortran order."""

    labels_volume: np.ndarray  # cc3d's labelled volume, in cc3d's own numbering
    remap: np.ndarray  # cc3d label -> our label (numbered by first voxel in a Fortran scan)
    n: int  # number of components
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray]  # voxel indices, sorted in Fortran order
    label: np.ndarray  # our label of each voxel (int64)
    pet: np.ndarray  # PET of each voxel (float64)
    size: np.ndarray  # voxels per label, index 0 unused

    @property
    def n_voxels(self) -> int:
        return int(self.label.size)

    def label_at(self, xyz: tuple[np.ndarray, ...]) -> np.ndarray:
        """Our labels (0 = background) at the voxel indices ``xyz``."""
        return self.remap[self.labels_volume[xyz]]


def _label(mask: np.ndarray, pet: np.ndarray, connectivity: int) -> _Mask:
    """Label ``mask`` and gather its foreground voxels, touching the full volume only in cc3d and one scan."""
    import cc3d

    if mask.ndim == 3 and sum(d == 1 for d in mask.shape) >= 2:
        # cc3d 4.1 fails on 1x1xN lines with 26-connectivity ("maximum length exception");
        # a one-voxel zero border avoids it and changes no component.
        padded = cc3d.connected_components(np.pad(mask, 1), connectivity=connectivity, return_N=True)
        labels, n = np.ascontiguousarray(padded[0][1:-1, 1:-1, 1:-1]), padded[1]
    else:
        labels, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    layout = "F" if mask.flags.f_contiguous else "C"  # scan in memory order: a view, no copy
    flat = np.flatnonzero(mask.ravel(order=layout))
    xyz = np.unravel_index(flat, mask.shape, order=layout)
    raw = labels.ravel(order=layout)[flat].astype(np.int64)
    if layout == "C":  # bring the voxels into Fortran order (z slowest, x fastest)
        order = np.argsort(np.ravel_multi_index(xyz, mask.shape, order="F"), kind="stable")
        xyz = tuple(axis[order] for axis in xyz)
        raw = raw[order]
    # Number the components by their first voxel in the Fortran scan, whatever cc3d's numbering.
    remap = np.zeros(int(n) + 1, dtype=np.int64)
    if raw.size:
        present, first = np.unique(raw, return_index=True)
        remap[present[np.argsort(first)]] = np.arange(1, present.size + 1)
    label = remap[raw]
    values = pet[xyz].astype(np.float64)
    size = np.bincount(label, minlength=int(n) + 1)
    return _Mask(labels, remap, int(n), xyz, label, values, size)


def _biomarkers(m: _Mask, spacing: tuple[float, float, float], voxel_ml: float) -> dict[str, float]:
    if m.n_voxels == 0:
        return dict.fromkeys(_BIOMARKERS, 0.0) | {"lesion_count": 0}
    idx = np.column_stack(m.xyz)
    return {
        "suvmax": float(m.pet.max()),
        "suvmean": float(m.pet.mean()),
        "tmtv_ml": m.n_voxels * voxel_ml,
        "tla": float(m.pet.sum()) * voxel_ml,
        "lesion_count": m.n,
        "dmax_cm": dmax_mm(idx, spacing, fortran_sorted=True) / 10.0,
    }


def label_biomarkers(mask: np.ndarray, pet: np.ndarray, spacing: Sequence[float], *,
                     connectivity: int = 18) -> dict[str, float]:
    """The six patient-level measures of one mask (the stratification variables, PAPER.md §6.3):
    SUVmax, SUVmean, TMTV (mL), TLA (SUV·mL), lesion count (``connectivity``-connected components)
    and Dmax (cm), as :func:`evaluate_case` reports them for the ground truth."""
    sp = tuple(float(v) for v in spacing)
    fg = np.asfortranarray(np.asarray(mask) > 0)
    return _biomarkers(_label(fg, np.asarray(pet), connectivity), sp, float(np.prod(sp)) / 1000.0)


# ------------------------------------------------------------------------------------------ evaluate


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    pet: np.ndarray,
    spacing: Sequence[float],
    *,
    connectivity: int = 18,
    iou_threshold: float = 0.5,
    criterion: int = 3,
    empty_dice: float = math.nan,
    case_id: str = "",
) -> CaseEvaluation:
    """Evaluate one predicted mask against its ground truth and PET (see the module docstring).

    Args:
        pred, gt: binary masks (x, y, z) or (x, y), any of bool, integer or float dtype with values 0/1.
        pet: SUV image of the same shape.
        spacing: voxel size in mm per axis.
        connectivity: cc3d connectivity (6, 18, 26; 4 or 8 for 2-D).
        iou_threshold: criterion 2's threshold, in (0, 1].
        criterion: which criterion fills the headline columns (``tp``, ``fp``, ``fn``, ...).
        empty_dice: Dice when both masks are empty (NaN as in the study, or e.g. 1.0).
        case_id: name used in the rows and in error messages.

    Raises:
        LossbenchError: shapes differ, a mask is not binary, PET is not finite, or a bad option.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((6, 6, 6), bool); gt[1:3, 1:3, 1:3] = True
        >>> pet = np.ones(gt.shape); pet[2, 2, 2] = 9.0
        >>> res = evaluate_case(gt.copy(), gt, pet, (2.0, 2.0, 2.0))
        >>> res.case["dice"], res.case["tp"], res.case["fp"], res.case["fn"]
        (1.0, 1, 0, 0)
    """
    p_arr, g_arr, s_arr = np.asarray(pred), np.asarray(gt), np.asarray(pet)
    if not (p_arr.shape == g_arr.shape == s_arr.shape):
        raise LossbenchError(
            f"{_prefix(case_id)}shapes differ: prediction {p_arr.shape}, ground truth {g_arr.shape}, "
            f"PET {s_arr.shape}"
        )
    if g_arr.ndim not in (2, 3):
        raise LossbenchError(f"{_prefix(case_id)}expected 2-D or 3-D images, got shape {g_arr.shape}")
    ndim = g_arr.ndim
    conn = _check_options(connectivity, ndim, iou_threshold, criterion, float(empty_dice))
    spacing3 = _check_spacing(spacing, ndim, case_id)
    p_mask = _as_mask(p_arr, "prediction", case_id)
    g_mask = _as_mask(g_arr, "ground-truth", case_id)
    s_arr = _check_pet(s_arr, case_id)
    if ndim == 2:
        p_mask, g_mask, s_arr = (a[:, :, None] for a in (p_mask, g_mask, s_arr))
    shape = g_mask.shape
    voxel_ml = spacing3[0] * spacing3[1] * spacing3[2] / 1000.0

    g = _label(g_mask, s_arr, conn)
    p = _label(p_mask, s_arr, conn)
    ng, npr = g.n, p.n

    # ---- overlaps: (GT label, pred label, shared voxels) for every touching pair
    pred_at_g = p.label_at(g.xyz)
    both = pred_at_g > 0
    n_inter = int(both.sum())
    key = g.label[both] * (npr + 1) + pred_at_g[both]
    pair_key, pair_inter = np.unique(key, return_counts=True)
    pair_g, pair_p = np.divmod(pair_key, npr + 1)
    pair_iou = pair_inter / (g.size[pair_g] + p.size[pair_p] - pair_inter)

    # ---- best GT match of each predicted component: highest IoU, ties to the lowest GT label
    best_g = np.zeros(npr + 1, dtype=np.int64)
    best_iou = np.zeros(npr + 1, dtype=np.float64)
    if pair_key.size:
        order = np.lexsort((pair_g, -pair_iou, pair_p))
        sp_ = pair_p[order]
        first = np.ones(sp_.size, dtype=bool)
        first[1:] = sp_[1:] != sp_[:-1]
        best_g[sp_[first]] = pair_g[order][first]
        best_iou[sp_[first]] = pair_iou[order][first]

    # ---- SUVmax voxel of each GT lesion: argmax of PET inside it, ties to the first C-order index
    c_index = np.ravel_multi_index(g.xyz, shape)  # C order of (x, y, z)
    hot_pos = _group_argmax(g.label, g.pet, c_index, ng)
    hot_xyz = tuple(axis[hot_pos] for axis in g.xyz) if g.n_voxels else (np.zeros(ng + 1, np.int64),) * 3
    pred_at_hot = p.label_at(hot_xyz)

    # ---- criterion 1: any overlap
    overlapped_g = np.zeros(ng + 1, dtype=bool)
    overlapped_g[pair_g] = True
    overlapping_p = best_g > 0
    tp1 = int(overlapping_p[1:].sum())
    fp1 = npr - tp1
    fn1 = int((~overlapped_g[1:]).sum())

    # ---- criteria 2 and 3: pred components in label order, a shared pool of GT lesions
    def match(candidate: np.ndarray) -> tuple[int, int, int, np.ndarray, np.ndarray]:
        pool = np.ones(ng + 1, dtype=bool)
        matched = np.zeros(ng + 1, dtype=np.int64)
        tp = 0
        for i in np.flatnonzero(candidate):  # ascending label order; the others are FP
            j = best_g[i]
            if pool[j]:
                pool[j] = False
                matched[j] = i
                tp += 1
        detected = ~pool
        detected[0] = False
        return tp, npr - tp, ng - int(detected.sum()), detected, matched

    cand2 = (best_g > 0) & (best_iou >= iou_threshold)
    cand2[0] = False
    tp2, fp2, fn2, det2, _ = match(cand2)
    cand3 = (best_g > 0) & (pred_at_hot[best_g] == np.arange(npr + 1))
    cand3[0] = False
    tp3, fp3, fn3, det3, matched3 = match(cand3)

    counts = {1: (tp1, fp1, fn1), 2: (tp2, fp2, fn2), 3: (tp3, fp3, fn3)}

    # ---- Dice and FP / FN volumes
    denom = g.n_voxels + p.n_voxels
    dice = float(empty_dice) if denom == 0 else 2.0 * n_inter / denom
    fp_vol = float(p.size[1:][~overlapping_p[1:]].sum()) * voxel_ml
    fn_vol = float(g.size[1:][~overlapped_g[1:]].sum()) * voxel_ml

    row: dict[str, object] = {
        "case_id": case_id,
        "criterion": int(criterion),
        "iou_threshold": float(iou_threshold),
        "connectivity": int(connectivity),
        "voxel_volume_ml": voxel_ml,
        "dice": dice,
    }
    for k in CRITERIA:
        tp, fp, fn = counts[k]
        sens, prec, f1 = _rates(tp, fp, fn)
        row.update({f"tp_c{k}": tp, f"fp_c{k}": fp, f"fn_c{k}": fn})
        row.update({f"sensitivity_c{k}": sens, f"precision_c{k}": prec, f"f1_c{k}": f1})
    for name in _RATES:  # the headline columns repeat the chosen criterion
        row[name] = row[f"{name}_c{criterion}"]
    row["fp_volume_ml"] = fp_vol
    row["fn_volume_ml"] = fn_vol
    row["overlap_ml"] = float(n_inter) * voxel_ml
    for who, m in (("gt", g), ("pred", p)):
        for name, value in _biomarkers(m, spacing3, voxel_ml).items():
            row[f"{who}_{name}"] = value
    row = {col: row[col] for col in CASE_COLUMNS}

    lesions = _lesion_rows(
        case_id=case_id,
        g=g,
        p=p,
        voxel_ml=voxel_ml,
        pairs=(pair_g, pair_p, pair_inter, pair_iou),
        hot_pos=hot_pos,
        detected={1: overlapped_g, 2: det2, 3: det3},
        matched3=matched3,
        criterion=criterion,
    )
    return CaseEvaluation(case=row, lesions=lesions)


def _lesion_rows(
    *,
    case_id: str,
    g: _Mask,
    p: _Mask,
    voxel_ml: float,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    hot_pos: np.ndarray,
    detected: dict[int, np.ndarray],
    matched3: np.ndarray,
    criterion: int,
) -> list[dict[str, object]]:
    ng = g.n
    if ng == 0:
        return []
    pair_g, pair_p, pair_inter, pair_iou = pairs
    size = g.size.astype(np.float64)
    pet_sum = np.bincount(g.label, weights=g.pet, minlength=ng + 1)
    pet_max = g.pet[hot_pos]  # the value at each lesion's SUVmax voxel
    hot_xyz = tuple(axis[hot_pos] for axis in g.xyz)
    centroid = [np.bincount(g.label, weights=axis, minlength=ng + 1) / np.maximum(size, 1) for axis in g.xyz]

    # Predicted components per lesion: the union U of those overlapping it (components are disjoint).
    p_sum = np.bincount(p.label, weights=p.pet, minlength=p.n + 1)
    p_max = _group_max(p.label, p.pet, p.n)
    n_overlap = np.bincount(pair_g, minlength=ng + 1)
    inter = np.bincount(pair_g, weights=pair_inter, minlength=ng + 1)
    u_size = np.bincount(pair_g, weights=p.size[pair_p], minlength=ng + 1)
    u_sum = np.bincount(pair_g, weights=p_sum[pair_p], minlength=ng + 1)
    u_max = np.full(ng + 1, -np.inf)
    np.maximum.at(u_max, pair_g, p_max[pair_p])
    best_iou = np.zeros(ng + 1)
    np.maximum.at(best_iou, pair_g, pair_iou)
    with np.errstate(invalid="ignore", divide="ignore"):  # index 0 is unused and 0/0
        dice = 2.0 * inter / (size + u_size)

    rows = []
    for j in range(1, ng + 1):
        has_u = n_overlap[j] > 0
        volume = float(size[j]) * voxel_ml
        rows.append(
            {
                "case_id": case_id,
                "lesion_id": j,
                "n_voxels": int(size[j]),
                "volume_ml": volume,
                "size_class": lesion_size_class(volume),
                "suvmax": float(pet_max[j]),
                "suvmean": float(pet_sum[j] / size[j]),
                "tla": float(pet_sum[j]) * voxel_ml,
                "centroid_x": float(centroid[0][j]),
                "centroid_y": float(centroid[1][j]),
                "centroid_z": float(centroid[2][j]),
                "hottest_x": int(hot_xyz[0][j]),
                "hottest_y": int(hot_xyz[1][j]),
                "hottest_z": int(hot_xyz[2][j]),
                "n_pred_overlapping": int(n_overlap[j]),
                "best_iou": float(best_iou[j]),
                "pred_volume_ml": float(u_size[j]) * voxel_ml if has_u else math.nan,
                "pred_suvmax": float(u_max[j]) if has_u else math.nan,
                "pred_suvmean": float(u_sum[j] / u_size[j]) if has_u else math.nan,
                "pred_tla": float(u_sum[j]) * voxel_ml if has_u else math.nan,
                "dice": float(dice[j]),
                "detected_c1": bool(detected[1][j]),
                "detected_c2": bool(detected[2][j]),
                "detected_c3": bool(detected[3][j]),
                "detected": bool(detected[criterion][j]),
                "matched_pred_c3": int(matched3[j]),
            }
        )
    return rows

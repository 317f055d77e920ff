"""A deliberately plain re-statement of the reference algorithm (PAPER.md §6), for cross-checks.

Full-volume masks per component, an IoU loop over every (prediction, GT) pair, the argmax of
PET × lesion mask over the whole volume, brute-force pairwise distances. Slow, obviously right:
the tests check :func:`lossbench.evaluation.evaluate_case` against it, and
``benchmarks/eval_speed.py`` uses it as the baseline. Not for production use.
Where the reference would crash (a best match already out of the pool; a component without overlap
containing voxel (0, 0, 0)) it follows lossbench's documented policy: FP.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy.spatial.distance import pdist


def label(mask: np.ndarray, connectivity: int = 18) -> tuple[np.ndarray, int]:
    # a zero border: cc3d 4.1 fails on 1x1xN lines with 26-connectivity; the border changes no component
    padded = np.asfortranarray(np.pad(mask.astype(bool), 1))
    lab, n = cc3d.connected_components(padded, connectivity=connectivity, return_N=True)
    lab = lab[1:-1, 1:-1, 1:-1]
    return lab, int(n)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = a.sum() + b.sum() - inter
    return inter / union


def detection(pred, gt, pet, criterion: int, threshold: float = 0.5, connectivity: int = 18):
    gl, ng = label(gt, connectivity)
    pl, npr = label(pred, connectivity)
    tp = fp = 0
    if criterion == 1:
        for i in range(1, npr + 1):
            if np.any((pl == i) & (gl > 0)):
                tp += 1
            else:
                fp += 1
        fn = sum(1 for j in range(1, ng + 1) if not np.any((gl == j) & (pl > 0)))
        return tp, fp, fn
    pool = list(range(1, ng + 1))
    for i in range(1, npr + 1):
        pmask = pl == i
        best, match = 0.0, None
        for j in range(1, ng + 1):
            v = iou(gl == j, pmask)
            if v > best:
                best, match = v, j
        if match is None or match not in pool:
            fp += 1
            continue
        if criterion == 2:
            hit = best >= threshold
        else:
            prod = (gl == match) * pet
            hot = np.unravel_index(np.argmax(prod), prod.shape)
            hit = bool(pmask[hot])
        if hit:
            tp += 1
            pool.remove(match)
        else:
            fp += 1
    return tp, fp, len(pool)


def fp_fn_volume(pred, gt, spacing, connectivity: int = 18):
    voxel_ml = float(np.prod(spacing)) / 1000.0
    gl, ng = label(gt, connectivity)
    pl, npr = label(pred, connectivity)
    fpv = sum(int((pl == i).sum()) for i in range(1, npr + 1) if not np.any((pl == i) & (gt > 0)))
    fnv = sum(int((gl == j).sum()) for j in range(1, ng + 1) if not np.any((gl == j) & (pred > 0)))
    return fpv * voxel_ml, fnv * voxel_ml


def dmax_mm(mask: np.ndarray, spacing) -> float:
    idx = np.argwhere(mask)
    if len(idx) < 2:
        return 0.0
    return float(pdist(idx * np.asarray(spacing, dtype=np.float64)).max())

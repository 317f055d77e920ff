"""Exact lesion spread (Dmax) without the O(n²) distance matrix.

Dmax is the largest Euclidean distance, in physical units, between the centres of any two
foreground voxels (PAPER.md §6.3)::

    Dmax = max_{a, b in mask} || (a - b) * spacing ||_2

The reference computes the full n × n distance matrix. The two voxels that realise the maximum are
always vertices of the convex hull of the voxel centres (the farthest point from any point of a set
is an extreme point of it), so the same value comes from the hull vertices alone:

1. *Column pruning*: along every line parallel to the first axis only the two end voxels can be hull
   vertices (the voxels between them are convex combinations of the ends). This keeps at most two
   voxels per (y, z) column, in one linear pass.
2. *Dimension check*: the affine dimension of the remaining points is read from the singular values
   of the centred coordinates. Qhull needs a full-dimensional input, so a single voxel (rank 0),
   collinear voxels (rank 1) and coplanar voxels (rank 2, e.g. a single slice) are handled apart:
   rank 1 keeps the two ends of the line, rank 2 takes the 2-D hull in the plane's own coordinates.
3. The largest distance among the hull vertices, computed in blocks from the original physical
   coordinates (so the value is the one brute force would give, not one from projected coordinates).

If Qhull fails anyway (it should not after step 2) the pruned set is searched exhaustively in blocks,
which is slower but still exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dmax_mm", "max_pairwise_distance"]

# Entries of one block of the distance matrix (64 MB of float64).
_BLOCK_ENTRIES = 1 << 23


def max_pairwise_distance(points: np.ndarray) -> float:
    """Largest Euclidean distance between two rows of ``points`` (n × d), in blocks of bounded memory.

    Squared distances are formed as |a|² + |b|² - 2 a·b (a matrix product, fast) only to find the
    farthest pairs; every pair within round-off of the largest value is then recomputed directly from
    the coordinate differences, so the value returned is the one a brute-force ``pdist`` gives.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = pts.shape[0]
    if n < 2:
        return 0.0
    centred = pts - pts.mean(axis=0)  # centring keeps the Gram form well conditioned
    sq = np.einsum("ij,ij->i", centred, centred)
    rows = max(1, _BLOCK_ENTRIES // n)

    def block_d2(start: int) -> np.ndarray:
        block = centred[start : start + rows]
        return sq[start : start + rows, None] + sq[None, :] - 2.0 * (block @ centred.T)

    starts = range(0, n, rows)
    block_max = [float(block_d2(s).max()) for s in starts]
    best = max(block_max)
    tol = 1e-9 * max(best, 1.0)
    exact = 0.0
    for s, m in zip(starts, block_max, strict=True):
        if m < best - tol:
            continue
        a, b = np.nonzero(block_d2(s) >= best - tol)
        diff = pts[s + a] - pts[b]
        exact = max(exact, float(np.sqrt((diff * diff).sum(axis=1)).max()))
    return exact


def _prune_columns(idx: np.ndarray) -> np.ndarray:
    """Keep the first and last voxel of every run of equal (y, z) in ``idx`` sorted by (z, y, x).

    ``idx`` holds integer voxel indices in Fortran order (x varies fastest), which is what
    ``np.flatnonzero(mask.ravel('F'))`` followed by ``unravel_index(order='F')`` yields.
    """
    n = idx.shape[0]
    if n <= 2:
        return idx
    same_col = (idx[1:, 1] == idx[:-1, 1]) & (idx[1:, 2] == idx[:-1, 2])
    keep = np.ones(n, dtype=bool)
    # A voxel is interior to its column when both of its neighbours in the list share its column.
    keep[1:-1] = ~(same_col[:-1] & same_col[1:])
    return idx[keep]


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """Indices of a subset of ``points`` (n × 3, physical) that contains every convex-hull vertex."""
    from scipy.spatial import ConvexHull, QhullError

    n = points.shape[0]
    if n <= 4:
        return np.arange(n)
    centred = points - points.mean(axis=0)
    # Singular values of the centred cloud give its affine dimension. Voxel centres lie on a lattice, so
    # a non-degenerate set has singular values far above round-off: the relative tolerance is safe.
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    tol = max(sing[0], 1.0) * 1e-9
    rank = int((sing > tol).sum())
    if rank == 0:
        return np.arange(1)
    if rank == 1:
        proj = centred @ vt[0]
        return np.array([int(np.argmin(proj)), int(np.argmax(proj))])
    coords = centred @ vt[:rank].T  # coordinates in the plane (rank 2) or a rotated frame (rank 3)
    try:
        hull = ConvexHull(coords)
    except QhullError:  # pragma: no cover - defensive: the rank test should make this unreachable
        return np.arange(n)
    # Points Qhull judged coplanar with a facet (option Qc, on by default) are kept as candidates too,
    # so that a vertex merged away by Qhull's precision handling cannot be lost.
    if hull.coplanar.size:
        return np.union1d(hull.vertices, hull.coplanar[:, 0])
    return hull.vertices


def dmax_mm(indices: np.ndarray, spacing: Sequence[float], *, fortran_sorted: bool = False) -> float:
    """Dmax in mm of a set of voxel indices (n × d integer array) with voxel ``spacing`` in mm.

    ``indices`` are voxel indices of the foreground (e.g. ``np.argwhere(mask)``); 0 for fewer than two
    voxels. Pass ``fortran_sorted=True`` only when the rows are sorted in Fortran order (x fastest);
    this enables the column pruning of step 1 without a sort. Returns the exact maximum of the
    pairwise centre distances (see the module docstring), not an approximation.
    """
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.shape[0] < 2:
        return 0.0
    sp = np.asarray(spacing, dtype=np.float64)
    if idx.shape[1] == 3 and not fortran_sorted:
        order = np.lexsort((idx[:, 0], idx[:, 1], idx[:, 2]))
        idx = idx[order]
        fortran_sorted = True
    if idx.shape[1] == 3 and fortran_sorted:
        idx = _prune_columns(idx)
    pts = idx.astype(np.float64) * sp
    if pts.shape[1] < 3:  # 1-D or 2-D input: lift to 3-D; the rank test treats it as degenerate
        pts = np.pad(pts, ((0, 0), (0, 3 - pts.shape[1])))
    verts = _hull_vertices(pts)
    return max_pairwise_distance(pts[verts])

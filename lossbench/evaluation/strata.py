"""Strata of cases by their ground truth: lesion count, tumour volume, activity and spread.

The study stratified by "number of lesions per image, tumour volume, activity (SUV) and extent of
spread" (PAPER.md §7) without publishing its bin edges, so we fix ours **a priori**, before looking at
any result, and offer cohort tertiles as the data-driven alternative.

Every stratum is a half-open interval [lower, upper) of a per-case GT value; a case without any GT
lesion gets the stratum ``"none"`` in all four columns.

Fixed edges (``scheme="fixed"``, :data:`FIXED_EDGES`)
-----------------------------------------------------
- **count** (``gt_lesion_count``): ``1`` | ``2-5`` | ``>5``, edges 2 and 6. A single lesion is its own
  class (solitary recurrence); up to five lesions is the usual definition of oligometastatic prostate
  cancer (the cut used by metastasis-directed-therapy trials and the EAU guideline); more than five is
  polymetastatic disease.
- **volume** (``gt_tmtv_ml``, patient TMTV): ``<4`` | ``4-20`` | ``>=20`` mL, edges 4 and 20. The
  reference's only size hint is *per lesion* (small < 1.5 mL, medium 1.5–4 mL, large ≥ 4 mL, kept in
  the lesion table as ``size_class``). Applied to the patient total those edges would put nearly every
  multi-lesion patient into "large", so we reuse 4 mL as the patient-level lower cut: below it the
  whole tumour burden is no bigger than one "large" lesion (low burden). 20 mL (five large lesions'
  worth) separates moderate from high burden, in line with the TMTV ranges reported for metastatic
  prostate cancer on PSMA PET, where values of tens of mL and more mark extensive disease.
- **activity** (``gt_suvmax``, the hottest GT voxel): ``<10`` | ``10-25`` | ``>=25``, edges 10 and 25,
  anchored on normal-organ uptake of [18F]DCFPyL (PAPER.md appendix) as the PROMISE miPSMA score is:
  below ~10 a lesion is no hotter than the salivary glands (parotid SUVmean ≈ 9, i.e. low to
  intermediate PSMA expression); 10–25 is above the salivary glands up to kidney level (kidneys ≈ 20 ±
  4.6); ≥ 25 is hotter than the kidneys, the most avid normal organ after the bladder.
- **spread** (``gt_dmax_cm``): ``<5`` | ``5-20`` | ``>=20`` cm, edges 5 and 20. Below 5 cm the disease is
  confined to one site (a single lesion, the prostate bed, or one nodal station; a prostate is about
  4–5 cm long); 5–20 cm spans one region such as the pelvis (prostate bed to the common iliac nodes);
  at 20 cm and more the disease reaches beyond the pelvis (retroperitoneum, skeleton, thorax):
  disseminated.

Quantile edges (``scheme="quantile"``)
--------------------------------------
Tertiles (``n_quantiles=3``) of each GT value over the cohort's cases that have at least one GT
lesion (``numpy.quantile``, linear interpolation). Repeated edges, and edges not above the smallest
value (they would only create an empty first stratum), are dropped, so a variable with many ties
(lesion count) can have fewer than three strata. Labels are the intervals with the computed edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from lossbench.errors import LossbenchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FIXED_EDGES",
    "LESION_SIZE_EDGES_ML",
    "STRATA",
    "lesion_size_class",
    "quantile_edges",
    "strata_labels",
    "stratify",
]

#: Stratum column -> the per-case GT column it is computed from.
STRATA: dict[str, str] = {
    "stratum_count": "gt_lesion_count",
    "stratum_volume": "gt_tmtv_ml",
    "stratum_activity": "gt_suvmax",
    "stratum_spread": "gt_dmax_cm",
}

#: A-priori edges (see the module docstring for the reasoning).
FIXED_EDGES: dict[str, tuple[float, ...]] = {
    "stratum_count": (2.0, 6.0),
    "stratum_volume": (4.0, 20.0),
    "stratum_activity": (10.0, 25.0),
    "stratum_spread": (5.0, 20.0),
}

#: Fixed labels where the interval notation would read badly (integer counts).
_FIXED_LABELS: dict[str, tuple[str, ...]] = {"stratum_count": ("1", "2-5", ">5")}

#: The reference's per-lesion size classes (mL): small < 1.5 <= medium < 4 <= large.
LESION_SIZE_EDGES_ML: tuple[float, float] = (1.5, 4.0)

NONE = "none"


def lesion_size_class(volume_ml: float) -> str:
    """``small`` (< 1.5 mL), ``medium`` (1.5 to < 4 mL) or ``large`` (>= 4 mL), as in the reference."""
    small, large = LESION_SIZE_EDGES_ML
    if volume_ml < small:
        return "small"
    return "medium" if volume_ml < large else "large"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def strata_labels(edges: Sequence[float]) -> list[str]:
    """Interval labels for ``edges``: ``<e1``, ``e1-e2``, ..., ``>=ek`` (a single ``all`` if no edge)."""
    edges = list(edges)
    if not edges:
        return ["all"]
    labels = [f"<{_fmt(edges[0])}"]
    labels += [f"{_fmt(a)}-{_fmt(b)}" for a, b in pairwise(edges)]
    labels.append(f">={_fmt(edges[-1])}")
    return labels


def quantile_edges(values: Sequence[float], n_quantiles: int = 3) -> tuple[float, ...]:
    """Inner quantile edges of ``values`` (tertiles for 3), without duplicates or empty first bins."""
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if n_quantiles < 1:
        raise LossbenchError(f"number of quantiles must be at least 1, got {n_quantiles}")
    if vals.size == 0 or n_quantiles == 1:
        return ()
    qs = np.quantile(vals, np.arange(1, n_quantiles) / n_quantiles)
    edges = sorted({float(q) for q in qs if q > vals.min()})
    return tuple(edges)


def stratify(
    cases: pd.DataFrame,
    scheme: str = "fixed",
    *,
    edges: Mapping[str, Sequence[float]] | None = None,
    n_quantiles: int = 3,
) -> pd.DataFrame:
    """Return a copy of the per-case table with the four ``stratum_*`` columns added.

    Args:
        cases: per-case table with the GT columns named in :data:`STRATA`.
        scheme: ``"fixed"`` (:data:`FIXED_EDGES`, or ``edges`` to override some) or ``"quantile"``.
        edges: optional edges per stratum column, overriding the scheme's.
        n_quantiles: number of quantile strata (3: tertiles) for ``scheme="quantile"``.
    """
    import pandas as pd

    if scheme not in ("fixed", "quantile"):
        raise LossbenchError(f"unknown strata scheme {scheme!r}; use 'fixed' or 'quantile'")
    missing = [src for src in STRATA.values() if src not in cases.columns]
    if missing:
        raise LossbenchError(f"per-case table lacks the column(s) needed for strata: {', '.join(missing)}")
    out = cases.copy()
    has_lesion = out["gt_lesion_count"].to_numpy() > 0
    for column, source in STRATA.items():
        values = out[source].to_numpy(dtype=np.float64)
        if edges is not None and column in edges:
            cuts = tuple(sorted(float(e) for e in edges[column]))
            labels = strata_labels(cuts)
        elif scheme == "fixed":
            cuts = FIXED_EDGES[column]
            labels = list(_FIXED_LABELS.get(column, strata_labels(cuts)))
        else:
            cuts = quantile_edges(values[has_lesion], n_quantiles)
            labels = strata_labels(cuts)
        bins = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="right")
        col = np.where(has_lesion, np.asarray(labels, dtype=object)[bins], NONE)
        out[column] = pd.Series(col, index=out.index, dtype=object)
    return out

"""Agreement of predicted with ground-truth biomarkers, as the companion study measured it.

Pure functions on arrays and per-case DataFrames (no MLflow). For each biomarker the pairs are
(GT value, predicted value) of the same unit (case, or case × fold × seed; see
:mod:`lossbench.compare.stats`), the predicted value being averaged over a loss's runs when several
runs share a unit. Averaging predictions over seeds measures the agreement of the replicate mean,
which is at least as good as a typical single run's; ``lossbench compare --seeds each`` keeps every
run instead.

Statistics (x = GT, y = prediction, d = y − x, n units)
-------------------------------------------------------
- **Lin's concordance correlation coefficient** (Lin 1989), with population (1/n) moments:
  ρc = 2 s_xy / (s_x² + s_y² + (x̄ − ȳ)²). Confidence interval on Fisher's z = atanh(ρc) with Lin's
  asymptotic variance (Lin 1989, corrected 2000; the ``z-transform`` interval of R's DescTools::CCC):
  var(z) = [ (1 − r²) ρc² / ((1 − ρc²) r²) + 2 ρc³ (1 − ρc) u² / (r (1 − ρc²)²)
  − ρc⁴ u⁴ / (2 r² (1 − ρc²)²) ] / (n − 2), where r is Pearson's correlation and
  u = (x̄ − ȳ) / √(s_x s_y).
- **Bland–Altman**: bias = mean(d), SD of d (ddof 1), 95 % limits of agreement bias ± 1.96 SD
  (z = Φ⁻¹(0.975)).
- **TOST equivalence** (two one-sided paired t-tests, ``statsmodels.stats.weightstats.ttost_paired``):
  H0: mean(d) ≤ −Δ or mean(d) ≥ Δ against H1: −Δ < mean(d) < Δ, with
  **Δ = margin × |mean of the GT values of the compared cases|** (margin 0.20: ±20 % of the mean GT
  value). p_tost = max of the two one-sided p-values; ``equivalent`` when the p-value corrected over
  the family of TOSTs reported (same method as the paired tests) is ≤ alpha.
  Why the GT mean: the margin must be one number per test for a paired t-test on d; a margin
  relative to each case's own GT value (or a log ratio) is undefined for cases with GT value 0 —
  every case without lesions has TMTV, TLA, lesion count and Dmax 0, and missed lesions give
  predicted 0 — and is dominated by the smallest lesions. ±20 % of the mean GT value reads as "the
  average bias is within a fifth of the average true value", on the biomarker's own unit.
  The t-tests assume roughly normal mean differences (n large or d not too skewed).
- **CP and TDI** (Lin 2000), under normality of d with mean μ = bias and SD σ:
  CP(δ) = Φ((δ − μ)/σ) − Φ((−δ − μ)/σ), the proportion of |d| < δ, reported at δ = Δ (``cp_margin``);
  TDI_0.90 = the δ with CP(δ) = 0.90 (solved exactly, rather than Lin's 1.645·√MSD approximation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lossbench.compare.stats import CORRECTIONS, MIN_PAIRS, adjust_pvalues, aggregate

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AGREEMENT_COLUMNS",
    "BIOMARKERS",
    "agreement_table",
    "bland_altman",
    "ccc",
    "ccc_ci",
    "coverage_probability",
    "tdi",
    "tost",
]

#: The six patient-level measures of the companion study (columns gt_<name> and pred_<name>).
BIOMARKERS = ("suvmax", "suvmean", "tmtv_ml", "tla", "lesion_count", "dmax_cm")

AGREEMENT_COLUMNS = (
    "loss", "biomarker", "n", "gt_mean", "pred_mean", "ccc", "ccc_low", "ccc_high", "pearson_r", "ba_bias",
    "ba_sd", "ba_loa_low", "ba_loa_high", "margin", "tost_p_lower", "tost_p_upper", "tost_p",
    "tost_p_adjusted", "equivalent", "cp_margin", "tdi_90", "flag",
)


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def ccc(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient 2 s_xy / (s_x² + s_y² + (x̄ − ȳ)²), 1/n moments.

    >>> round(ccc([1, 2, 3, 4, 5], [2, 3, 3, 5, 6]), 6)
    0.833333
    """
    x, y = _pair(x, y)
    if x.size < 2:
        return math.nan
    mx, my = x.mean(), y.mean()
    sxy = float(np.mean((x - mx) * (y - my)))
    den = float(np.mean((x - mx) ** 2) + np.mean((y - my) ** 2) + (mx - my) ** 2)
    return 2.0 * sxy / den if den > 0 else math.nan


def ccc_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(ρc, lower, upper): Lin's CCC with the Fisher-z interval of the module docstring."""
    from scipy.stats import norm

    x, y = _pair(x, y)
    rc = ccc(x, y)
    n = x.size
    if math.isnan(rc) or n < 3:
        return rc, math.nan, math.nan
    sx, sy = float(x.std()), float(y.std())
    if sx == 0 or sy == 0:
        return rc, math.nan, math.nan
    r = float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))
    if abs(rc) >= 1 or r == 0:
        return rc, rc, rc
    u = float(x.mean() - y.mean()) / math.sqrt(sx * sy)
    one = 1.0 - rc**2
    var_z = ((1 - r**2) * rc**2 / (one * r**2) + 2 * rc**3 * (1 - rc) * u**2 / (r * one**2)
             - rc**4 * u**4 / (2 * r**2 * one**2)) / (n - 2)
    if not var_z > 0:
        return rc, math.nan, math.nan
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(var_z)
    z = math.atanh(rc)
    return rc, math.tanh(z - half), math.tanh(z + half)


def bland_altman(gt: Sequence[float], pred: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Bias (mean of pred − gt), SD of the differences (ddof 1) and the limits bias ± z·SD."""
    from scipy.stats import norm

    x, y = _pair(gt, pred)
    d = y - x
    n = d.size
    bias = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    z = float(norm.ppf(0.5 + level / 2))
    return {"bias": bias, "sd": sd, "loa_low": bias - z * sd, "loa_high": bias + z * sd}


def tost(gt: Sequence[float], pred: Sequence[float], margin: float) -> tuple[float, float, float]:
    """Paired TOST of −margin < mean(pred − gt) < margin: (p, p of the lower test, p of the upper test)."""
    from statsmodels.stats.weightstats import ttost_paired

    x, y = _pair(gt, pred)
    if x.size < 2 or not margin > 0:
        return math.nan, math.nan, math.nan
    d = y - x
    if np.ptp(d) == 0:  # no spread: the t statistics are ±inf; each one-sided test is decided by the bias
        low = 0.0 if d[0] > -margin else 1.0
        upp = 0.0 if d[0] < margin else 1.0
        return max(low, upp), low, upp
    p, (_, p_low, _), (_, p_upp, _) = ttost_paired(y, x, -margin, margin)
    return float(p), float(p_low), float(p_upp)


def coverage_probability(bias: float, sd: float, delta: float) -> float:
    """CP(δ) = P(|d| < δ) for d ~ N(bias, sd²) (Lin 2000)."""
    from scipy.stats import norm

    if any(math.isnan(v) for v in (bias, sd, delta)) or delta < 0:
        return math.nan
    if sd == 0:
        return 1.0 if abs(bias) < delta else 0.0
    return float(norm.cdf((delta - bias) / sd) - norm.cdf((-delta - bias) / sd))


def tdi(bias: float, sd: float, p: float = 0.90) -> float:
    """TDI_p: the δ with CP(δ) = p for d ~ N(bias, sd²), solved exactly (Lin 2000)."""
    from scipy.optimize import brentq

    if math.isnan(bias) or math.isnan(sd):
        return math.nan
    if sd == 0:
        return abs(bias)
    hi = abs(bias) + 10 * sd
    return float(brentq(lambda delta: coverage_probability(bias, sd, delta) - p, 0.0, hi, xtol=1e-12))


def agreement_table(
    df: pd.DataFrame,
    biomarkers: Sequence[str] = BIOMARKERS,
    *,
    by: str | Iterable[str] = ("network",),
    loss_col: str = "loss",
    unit: str | Iterable[str] = ("case_id",),
    margin: float = 0.20,
    alpha: float = 0.05,
    correction: str = "holm",
    min_pairs: int = MIN_PAIRS,
) -> pd.DataFrame:
    """Per group × loss × biomarker: CCC, Bland–Altman, TOST, CP and TDI of ``pred_<b>`` against ``gt_<b>``.

    Rows with fewer than ``min_pairs`` complete pairs, or a GT mean of 0 (no relative margin), are
    flagged and not tested; the TOST p-values of the others are corrected together with
    ``correction`` (``tost_p_adjusted``) and ``equivalent`` is ``tost_p_adjusted <= alpha``.
    """
    import pandas as pd

    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    by = (by,) if isinstance(by, str) else tuple(by)
    columns = [f"{who}_{b}" for b in biomarkers for who in ("gt", "pred")]
    data = aggregate(df, columns, by=by, loss_col=loss_col, unit=unit)
    rows: list[dict[str, Any]] = []
    groups = data.groupby([*by, loss_col], sort=True, dropna=False)
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        head = dict(zip([*by, "loss"], key, strict=True))
        for b in biomarkers:
            x, y = _pair(group[f"gt_{b}"], group[f"pred_{b}"])
            n = int(x.size)
            gt_mean = float(x.mean()) if n else math.nan
            rc, lo, hi = ccc_ci(x, y, 1.0 - alpha)
            ba = bland_altman(x, y)
            delta = margin * abs(gt_mean) if n else math.nan
            pearson = float(np.corrcoef(x, y)[0, 1]) if n > 1 and np.ptp(x) > 0 and np.ptp(y) > 0 else math.nan
            row = {
                **head, "biomarker": b, "n": n, "gt_mean": gt_mean, "pred_mean": float(y.mean()) if n else math.nan,
                "ccc": rc, "ccc_low": lo, "ccc_high": hi, "pearson_r": pearson, "ba_bias": ba["bias"],
                "ba_sd": ba["sd"], "ba_loa_low": ba["loa_low"], "ba_loa_high": ba["loa_high"], "margin": delta,
                "tost_p_lower": math.nan, "tost_p_upper": math.nan, "tost_p": math.nan,
                "cp_margin": coverage_probability(ba["bias"], ba["sd"], delta), "tdi_90": tdi(ba["bias"], ba["sd"]),
                "flag": "",
            }
            if n < min_pairs:
                row["flag"] = f"too few cases: n = {n} < {min_pairs}"
            elif not delta > 0:
                row["flag"] = "GT mean is 0: no relative equivalence margin"
            else:
                row["tost_p"], row["tost_p_lower"], row["tost_p_upper"] = tost(x, y, delta)
            rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, *AGREEMENT_COLUMNS])
    out["tost_p_adjusted"], out["equivalent"] = adjust_pvalues(
        out["tost_p"].to_numpy(dtype=np.float64), method=correction, alpha=alpha)
    return out

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
  TDI_0.90 = the δ with CP(δ) = 0.90 (solved exactly, rather than Lin's 1.645·√MSD approximation),
  with a percentile bootstrap CI over the cases (``tdi_90_ci_low``/``high``).
- **Limits of agreement CIs** (Bland & Altman 1999): LoA ± t_{n−1} · SD · √(1/n + z²/(2(n − 1))).

Scale (``lossbench compare --ba-scale``)
-----------------------------------------
- ``linear`` (default): d = pred − GT in the biomarker's unit.
- ``log``: for multiplicative biomarkers (TMTV, TLA), d = ln(pred) − ln(GT): the bias and limits
  are log ratios (the report shows exp(·), i.e. the geometric-mean ratio pred/GT and its limits);
  the TOST margin is ±ln(1 + margin) (ratio within [1/1.2, 1.2] for 20 %), CP/TDI in log units.
  CCC is always on the linear scale.

Empty ground truth (explicit policy)
------------------------------------
- A (0, 0) pair — GT and prediction both empty (no lesion, none predicted) — is **left out** of every
  agreement statistic and counted in ``n_empty_both``: it says nothing about how well a lesion's
  biomarker is measured, and keeping it would inflate CCC and shrink the limits of agreement.
- A pair with exactly one 0 (a missed patient, or lesions predicted in a lesion-free one) is a real
  measurement error: kept on the linear scale; on the log scale it has no ratio and is left out,
  counted in ``n_one_zero`` (see the detection metrics for these cases).
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
    "loa_ci",
    "tdi",
    "tdi_ci",
    "tost",
]

#: The six patient-level measures of the companion study (columns gt_<name> and pred_<name>).
BIOMARKERS = ("suvmax", "suvmean", "tmtv_ml", "tla", "lesion_count", "dmax_cm")

AGREEMENT_COLUMNS = (
    "loss", "biomarker", "scale", "n", "n_empty_both", "n_one_zero", "gt_mean", "pred_mean", "ccc", "ccc_low",
    "ccc_high", "pearson_r", "ba_bias", "ba_sd", "ba_loa_low", "ba_loa_high", "loa_low_ci_low", "loa_low_ci_high",
    "loa_high_ci_low", "loa_high_ci_high", "margin", "tost_p_lower", "tost_p_upper", "tost_p",
    "tost_p_adjusted", "equivalent", "cp_margin", "tdi_90", "tdi_90_ci_low", "tdi_90_ci_high", "flag",
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


def loa_ci(sd: float, n: int, bias: float, level: float = 0.95) -> tuple[float, float, float, float]:
    """CIs of the two limits of agreement (Bland & Altman 1999, approximate):
    SE(LoA) = SD · √(1/n + z²/(2(n − 1))), CI = LoA ± t_{n−1} · SE.

    Returns (low limit's CI low, high; high limit's CI low, high).
    """
    from scipy.stats import norm, t

    if n < 3 or math.isnan(sd):
        return (math.nan,) * 4
    z = float(norm.ppf(0.975))
    se = sd * math.sqrt(1.0 / n + z * z / (2.0 * (n - 1)))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * se
    low, high = bias - z * sd, bias + z * sd
    return low - half, low + half, high - half, high + half


def _tdi_vec(bias: np.ndarray, sd: np.ndarray, p: float = 0.90) -> np.ndarray:
    """TDI_p for arrays of (bias, sd) by bisection (60 halvings of [0, |bias| + 10 sd])."""
    from scipy.stats import norm

    lo = np.zeros_like(bias)
    hi = np.abs(bias) + 10 * sd
    for _ in range(60):
        mid = (lo + hi) / 2
        cp = norm.cdf((mid - bias) / sd) - norm.cdf((-mid - bias) / sd)
        below = cp < p
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return (lo + hi) / 2


def tdi_ci(d: np.ndarray, p: float = 0.90, level: float = 0.95, n_boot: int = 1000, seed: int = 0
           ) -> tuple[float, float]:
    """Percentile bootstrap CI of TDI_p (normal-theory TDI of each resample of the cases)."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    if n < 3 or n_boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    samples = d[idx]
    bias = samples.mean(axis=1)
    sd = samples.std(axis=1, ddof=1)
    ok = sd > 0
    values = np.where(ok, _tdi_vec(bias, np.where(ok, sd, 1.0), p), np.abs(bias))
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


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
    scale: str = "linear",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per group × loss × biomarker: CCC, Bland–Altman (with LoA CIs), TOST, CP and TDI (with CI).

    Empty-GT policy (module docstring): (0, 0) pairs are left out and counted (``n_empty_both``);
    on the log scale pairs with a single 0 are left out too and counted (``n_one_zero``).
    Rows with fewer than ``min_pairs`` pairs, or a linear GT mean of 0, are flagged and not tested;
    the TOST p-values of the others are corrected together with ``correction``.
    """
    import pandas as pd

    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    if scale not in ("linear", "log"):
        raise ValueError(f"unknown Bland–Altman scale {scale!r}; use linear or log")
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
            both = (x == 0) & (y == 0)
            one = (x == 0) ^ (y == 0)
            keep = ~both
            if scale == "log":
                keep &= ~one
            x, y = x[keep], y[keep]
            n = int(x.size)
            gt_mean = float(x.mean()) if n else math.nan
            rc, lo, hi = ccc_ci(x, y, 1.0 - alpha)
            if scale == "log":
                with np.errstate(divide="ignore", invalid="ignore"):
                    lx, ly = np.log(x), np.log(y)
                ba = bland_altman(lx, ly)
                delta = math.log1p(margin)
                d = ly - lx
            else:
                ba = bland_altman(x, y)
                delta = margin * abs(gt_mean) if n else math.nan
                d = y - x
            pearson = float(np.corrcoef(x, y)[0, 1]) if n > 1 and np.ptp(x) > 0 and np.ptp(y) > 0 else math.nan
            ci = loa_ci(ba["sd"], n, ba["bias"], 1.0 - alpha)
            t_lo, t_hi = tdi_ci(d, 0.90, 1.0 - alpha, n_boot, seed) if n >= min_pairs else (math.nan, math.nan)
            row = {
                **head, "biomarker": b, "scale": scale, "n": n, "n_empty_both": int(both.sum()),
                "n_one_zero": int(one.sum()), "gt_mean": gt_mean, "pred_mean": float(y.mean()) if n else math.nan,
                "ccc": rc, "ccc_low": lo, "ccc_high": hi, "pearson_r": pearson, "ba_bias": ba["bias"],
                "ba_sd": ba["sd"], "ba_loa_low": ba["loa_low"], "ba_loa_high": ba["loa_high"],
                "loa_low_ci_low": ci[0], "loa_low_ci_high": ci[1], "loa_high_ci_low": ci[2],
                "loa_high_ci_high": ci[3], "margin": delta,
                "tost_p_lower": math.nan, "tost_p_upper": math.nan, "tost_p": math.nan,
                "cp_margin": coverage_probability(ba["bias"], ba["sd"], delta), "tdi_90": tdi(ba["bias"], ba["sd"]),
                "tdi_90_ci_low": t_lo, "tdi_90_ci_high": t_hi, "flag": "",
            }
            if n < min_pairs:
                row["flag"] = f"too few cases: n = {n} < {min_pairs}"
            elif not delta > 0:
                row["flag"] = "GT mean is 0: no relative equivalence margin"
            elif scale == "log":
                row["tost_p"], row["tost_p_lower"], row["tost_p_upper"] = tost(lx, ly, delta)
            else:
                row["tost_p"], row["tost_p_lower"], row["tost_p_upper"] = tost(x, y, delta)
            rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, *AGREEMENT_COLUMNS])
    out["tost_p_adjusted"], out["equivalent"] = adjust_pvalues(
        out["tost_p"].to_numpy(dtype=np.float64), method=correction, alpha=alpha)
    return out

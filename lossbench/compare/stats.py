"""Paired comparisons of losses on per-case tables: Wilcoxon, Friedman, corrections, effect sizes.

Pure functions on pandas DataFrames (no MLflow): any table with a loss column, one or more
grouping columns (e.g. ``network``), unit columns that identify what is paired (e.g. ``case_id``)
and metric columns can be compared.

What is paired
--------------
A *unit* is one row key of :func:`aggregate`: by default ``("case_id",)``, i.e. one test case. Rows
of the input that share (group, loss, unit) — the same case evaluated by several runs of one loss,
e.g. several seeds or folds — are first **averaged** per metric (NaN values left out). Then, within
a group and a stratum level, loss A and loss B are paired on the units that have a non-NaN value for
both; the paired difference is ``d = A − B``. With ``unit=("case_id", "fold", "seed")`` every replicate
run is kept and (case, fold, seed) is paired with the same (case, fold, seed) of the other loss: the
same seed gives the same network initialisation and crops, but the pairs of one case are not
independent, so the p-values of that mode are optimistic (pseudo-replication).

Differences are rounded to 1e-10 so that floating-point noise from averaging does not create
spurious non-zero differences or break ties.

Primary test (:func:`twoway_pair`)
----------------------------------
Candidate and baseline as runs × cases tables; training runs and cases both random (two-way
random-effects model, method-of-moments variance components, Satterthwaite df; see
:func:`twoway_variance`). Estimate: the mean paired difference, with its t CI. This is the default
of ``lossbench compare`` (:mod:`lossbench.compare.families` labels the families).

Wilcoxon signed-rank test (:func:`wilcoxon_pair`, the secondary analysis)
-------------------------------------------------------------------------
Two-sided, zero differences dropped (``zero_method="wilcox"``), average ranks for ties. Up to
:data:`EXACT_MAX` = 500 non-zero differences the p-value is exact, ties or not: the conditional
null distribution of all 2**n sign flips by the shift algorithm (:func:`signed_rank_distribution`);
above, the tie-corrected normal approximation without continuity correction. The statistic is
min(T+, T−). Effect: the Hodges–Lehmann pseudo-median with its exact Wilcoxon-inverted CI
(:func:`hodges_lehmann`) — the estimand of the test.

Too few pairs
-------------
A test is not run, and is left out of the correction family, when it cannot reach significance or
rests on too little data; the row stays in the table with ``flag`` giving the reason:

- ``n < min_pairs`` (default :data:`MIN_PAIRS` = 6) pairs, or
- the smallest two-sided p-value attainable with ``n≠0`` non-zero differences, 2 / 2**n≠0 (all signs
  equal), exceeds ``alpha``: for alpha = 0.05 that is n≠0 ≤ 5.

Leaving out tests that cannot reject does not affect the error rate of the others (they could
never contribute a rejection), and keeps Holm/Bonferroni from being diluted by them.

Friedman test (:func:`friedman_block`)
--------------------------------------
With three or more losses in a group, ``scipy.stats.friedmanchisquare`` over the units that have a
value for every loss (complete blocks; chi-square approximation with scipy's tie correction).
Not run with fewer than ``min_pairs`` blocks, when every block is tied, or when even perfect
agreement of all blocks could not give p ≤ alpha. Effect size: Kendall's W = χ² / (n (k − 1)).

Correction (:func:`adjust_pvalues`, :func:`family_correct`)
------------------------------------------------------------
Holm (default), Bonferroni or Benjamini–Hochberg over one family, after Tarone's selection of the
tests whose smallest attainable p-value can pass the family's threshold (:func:`tarone_select`).
:func:`paired_tests` (one family over a whole table of Wilcoxon tests) is kept as a building block;
``lossbench compare`` builds pre-specified families in :mod:`lossbench.compare.families`.

Effect sizes of :func:`paired_tests`
------------------------------------
- ``estimate``, ``ci_low``, ``ci_high``: Hodges–Lehmann estimate and exact CI at 1 − alpha.
- ``median_diff``, ``mean_diff``: median and mean paired difference A − B.
- ``rank_biserial``: matched-pairs rank-biserial correlation (Kerby 2014),
  (T+ − T−) / (T+ + T−) over the non-zero differences: +1 when A is larger in every pair, −1 when
  B is.

Columns of a test table (:data:`TEST_COLUMNS`, after the grouping columns)
------------------------------------------------------------------------
``test`` (wilcoxon | friedman), ``stratum`` (all | count | volume | activity | spread), ``level``
(e.g. ``2-5``; ``all`` for the whole group), ``metric``, ``loss_a``, ``loss_b`` (Friedman: every loss
in ``loss_a``), ``n`` (pairs; Friedman: complete blocks), ``n_nonzero`` (non-zero differences;
Friedman: blocks not tied across all losses), ``method`` (exact | exact-permutation | normal | chi2),
``statistic`` (min(T+, T−); Friedman χ²), ``p``, ``p_adjusted``, ``significant``, ``mean_a``,
``mean_b``, ``median_a``, ``median_b``, ``mean_diff``, ``median_diff``, ``ci_low``, ``ci_high``,
``rank_biserial``, ``kendall_w``, ``flag`` (empty when tested, else why not).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ALL",
    "CORRECTIONS",
    "MIN_PAIRS",
    "TEST_COLUMNS",
    "aggregate",
    "correct",
    "describe",
    "friedman_block",
    "min_attainable_p",
    "ordered_levels",
    "paired_tests",
    "rank_biserial",
    "wilcoxon_pair",
]

#: The stratum name and level of the whole cohort.
ALL = "all"
#: Default minimum number of pairs (blocks for Friedman) before a test is run.
MIN_PAIRS = 6
#: multipletests methods offered.
CORRECTIONS = ("holm", "bonferroni", "fdr_bh")
#: Rounding of paired differences (absolute), against floating-point noise.
DECIMALS = 10
#: Largest number of non-zero differences tested with the exact (shift-algorithm) null distribution.
EXACT_MAX = 500

#: Columns of a test table after the grouping columns.
TEST_COLUMNS = (
    "test", "stratum", "level", "metric", "loss_a", "loss_b", "n", "n_nonzero", "method", "statistic", "p",
    "p_adjusted", "significant", "mean_a", "mean_b", "median_a", "median_b", "mean_diff", "median_diff",
    "ci_low", "ci_high", "rank_biserial", "kendall_w", "flag",
)


# ------------------------------------------------------------------------------------------ helpers
def _as_tuple(cols: str | Iterable[str] | None) -> tuple[str, ...]:
    if cols is None:
        return ()
    if isinstance(cols, str):
        return (cols,)
    return tuple(cols)


def _row_seed(seed: int, key: Sequence[Any]) -> int:
    return zlib.crc32("\x1f".join(map(str, (seed, *key))).encode()) & 0x7FFFFFFF


def min_attainable_p(n_nonzero: int) -> float:
    """Smallest two-sided Wilcoxon p-value possible with ``n_nonzero`` non-zero differences: 2 / 2**n."""
    return min(1.0, 2.0 ** (1 - int(n_nonzero)))


def rank_biserial(d: Sequence[float]) -> float:
    """Matched-pairs rank-biserial correlation (T+ − T−) / (T+ + T−); zero differences are dropped."""
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=np.float64)
    d = d[~np.isnan(d)]
    nz = d[d != 0]
    if nz.size == 0:
        return math.nan
    ranks = rankdata(np.abs(nz))
    t_plus = float(ranks[nz > 0].sum())
    t_minus = float(ranks[nz < 0].sum())
    return (t_plus - t_minus) / (t_plus + t_minus)


def ordered_levels(levels: Iterable[Any], order_by: Mapping[Any, float] | None = None) -> list[Any]:
    """Levels sorted by ``order_by`` (e.g. the smallest GT value in each level), ``none`` first."""
    levels = list(dict.fromkeys(levels))

    def key(level: Any) -> tuple[int, float, str]:
        if level == "none":
            return (0, -math.inf, "")
        value = order_by.get(level, math.inf) if order_by else math.inf
        return (1, float(value), str(level))

    return sorted(levels, key=key)


def _ordered_losses(losses: Iterable[str], baseline: str | None) -> list[str]:
    out = sorted(set(losses))
    if baseline in out:
        out.remove(baseline)
        out.insert(0, baseline)
    return out


# ------------------------------------------------------------------------------------------ tables
def aggregate(
    df: pd.DataFrame,
    metrics: Sequence[str],
    *,
    by: str | Iterable[str] = ("network",),
    loss_col: str = "loss",
    unit: str | Iterable[str] = ("case_id",),
    carry: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per (by, loss, unit): metrics averaged over the rows that share it (NaN left out).

    ``carry`` columns (e.g. strata, which belong to the case) keep their first value. Column
    ``n_rows`` counts the input rows averaged.
    """
    import pandas as pd

    by, unit, carry = _as_tuple(by), _as_tuple(unit), _as_tuple(carry)
    keys = [*by, loss_col, *unit]
    carry = tuple(c for c in carry if c not in keys)
    missing = [c for c in (*keys, *metrics, *carry) if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks column(s): {', '.join(dict.fromkeys(missing))}")
    data = df[list(dict.fromkeys([*keys, *metrics, *carry]))].copy()
    for metric in metrics:
        data[metric] = pd.to_numeric(data[metric], errors="coerce").astype(np.float64)
    grouped = data.groupby(keys, sort=True, dropna=False)
    out = grouped[list(metrics)].mean()
    if carry:
        out = out.join(grouped[list(carry)].first())
    out["n_rows"] = grouped.size()
    return out.reset_index()


def _pair_arrays(values: Mapping[str, np.ndarray], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """The units with a value for both losses (``values``: loss -> column of the unit × loss table)."""
    if a not in values or b not in values:
        return np.empty(0), np.empty(0)
    xa, xb = values[a], values[b]
    keep = ~(np.isnan(xa) | np.isnan(xb))
    return xa[keep], xb[keep]


def signed_rank_distribution(ranks: Sequence[float]) -> tuple[np.ndarray, float]:
    """Exact null distribution of T+ = sum of the ranks with a positive sign, ties allowed.

    The shift algorithm (Streitberg & Röhmel 1986): ranks are average ranks, so twice a rank is an
    integer; under H0 each sign is + or − with probability 1/2, independently, so the distribution of
    2·T+ is the convolution of the n two-point distributions {0, 2·r_i}, built by shifting and adding
    one rank at a time (O(n · n²), a few milliseconds for n = 500). Probabilities are kept (halved at
    each step), not counts, so nothing overflows.

    Returns (pmf over 2·T+ = 0, 1, …, 2·sum(ranks), scale = 2).
    """
    doubled = np.rint(2.0 * np.asarray(ranks, dtype=np.float64)).astype(np.int64)
    total = int(doubled.sum())
    pmf = np.zeros(total + 1)
    pmf[0] = 1.0
    top = 0
    for r in doubled:
        shifted = pmf[: top + 1].copy()
        pmf[: top + 1] *= 0.5
        pmf[r: r + top + 1] += 0.5 * shifted
        top += int(r)
    return pmf, 2.0


def signed_rank_exact(nz: Sequence[float]) -> tuple[float, float]:
    """Two-sided exact signed-rank test of non-zero differences, ties or not: (min(T+, T−), p).

    p = 2 · min(P(T+ ≤ t), P(T+ ≥ t)), capped at 1, from :func:`signed_rank_distribution` on the
    average ranks of |d| — the conditional (permutation) distribution of all 2**n sign flips, the
    same p-value as ``scipy.stats.wilcoxon(d, method=scipy.stats.PermutationMethod(n_resamples=inf))``.
    """
    from scipy.stats import rankdata

    nz = np.asarray(nz, dtype=np.float64)
    ranks = rankdata(np.abs(nz))
    pmf, scale = signed_rank_distribution(ranks)
    t = int(round(scale * float(ranks[nz > 0].sum())))
    cdf = np.cumsum(pmf)
    lower = float(cdf[t])
    upper = float(1.0 - cdf[t - 1]) if t > 0 else 1.0
    p = min(1.0, 2.0 * min(lower, upper))
    total = float(ranks.sum())
    t_plus = t / scale
    return min(t_plus, total - t_plus), p


def walsh_averages(d: np.ndarray) -> np.ndarray:
    """All (d_i + d_j)/2, i <= j, sorted."""
    d = np.asarray(d, dtype=np.float64)
    i, j = np.triu_indices(d.size)
    return np.sort((d[i] + d[j]) / 2.0)


def hodges_lehmann(d: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Hodges–Lehmann pseudo-median of the paired differences with its exact Wilcoxon-inverted CI.

    The estimate is the median of the n(n+1)/2 Walsh averages (all n differences, zeros included:
    the estimand of the signed-rank test); the CI is [W_(k), W_(M−k+1)] with k − 1 the largest t for
    which P(T+ ≤ t) ≤ (1 − level)/2 under the exact untied null distribution of n pairs (Hollander &
    Wolfe; R's ``wilcox.test(conf.int=TRUE)`` without ties). Its coverage is exact for continuous
    differences, and close to it when ties are few. When no k ≥ 1 exists (n too small for the level)
    the CI is (−inf, inf)... reported as NaN.
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan
    w = walsh_averages(d)
    est = float(np.median(w))
    pmf, scale = signed_rank_distribution(np.arange(1, n + 1))
    cdf = np.cumsum(pmf)[:: int(scale)]  # P(T+ <= t), t = 0 .. n(n+1)/2
    tail = (1.0 - level) / 2.0
    below = np.nonzero(cdf <= tail + 1e-12)[0]
    if below.size == 0:
        return est, math.nan, math.nan
    k = int(below[-1]) + 1  # 1-based order statistic
    m = w.size
    return est, float(w[k - 1]), float(w[m - k])


def wilcoxon_pair(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    min_pairs: int = MIN_PAIRS,
    n_boot: int = 0,
    seed: int = 0,
    simultaneous: float | None = None,
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired samples ``a`` and ``b`` with effect sizes (module docstring).

    Pairs with a NaN on either side are dropped. Returns the test-specific fields of a row of
    :func:`paired_tests`: n, n_nonzero, method, statistic, p, min_p, means, medians, mean_diff,
    median_diff, estimate (Hodges–Lehmann) with its exact CI (ci_low, ci_high) at 1 − alpha,
    rank_biserial, flag ("" when the test was run). ``n_boot`` and ``seed`` are accepted for
    compatibility and unused: the CI is exact.
    """
    from scipy import stats

    del n_boot, seed
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = np.round(a - b, DECIMALS)
    n = int(d.size)
    nz = d[d != 0]
    n_nz = int(nz.size)
    row: dict[str, Any] = {
        "n": n, "n_nonzero": n_nz, "method": "", "statistic": math.nan, "p": math.nan,
        "min_p": min_attainable_p(n_nz),
        "mean_a": float(a.mean()) if n else math.nan, "mean_b": float(b.mean()) if n else math.nan,
        "median_a": float(np.median(a)) if n else math.nan, "median_b": float(np.median(b)) if n else math.nan,
        "mean_diff": float(d.mean()) if n else math.nan, "median_diff": float(np.median(d)) if n else math.nan,
        "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "sci_low": math.nan, "sci_high": math.nan,
        "rank_biserial": rank_biserial(d), "flag": "",
    }
    if n:
        row["estimate"], row["ci_low"], row["ci_high"] = hodges_lehmann(d, 1.0 - alpha)
        if simultaneous is not None:
            _, row["sci_low"], row["sci_high"] = hodges_lehmann(d, 1.0 - simultaneous)
    if n < min_pairs:
        row["flag"] = f"too few pairs: n = {n} < {min_pairs}"
        return row
    if min_attainable_p(n_nz) > alpha:
        row["flag"] = (f"too few non-zero differences: {n_nz} of {n} pairs differ, smallest attainable "
                       f"p = {min_attainable_p(n_nz):.3g} > alpha = {alpha:g}")
        return row
    if n_nz <= EXACT_MAX:
        row["method"] = "exact"
        row["statistic"], row["p"] = signed_rank_exact(nz)
    else:
        row["method"] = "normal"
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method="asymptotic",
                             correction=False)
        row["statistic"], row["p"] = float(res.statistic), float(res.pvalue)
    return row


def friedman_block(block: np.ndarray, *, alpha: float = 0.05, min_pairs: int = MIN_PAIRS) -> dict[str, Any]:
    """Friedman test on an (n units × k losses) array of complete blocks (module docstring)."""
    from scipy import stats

    block = np.round(np.asarray(block, dtype=np.float64), DECIMALS)
    n, k = block.shape if block.ndim == 2 else (0, 0)
    row: dict[str, Any] = {"n": int(n), "n_nonzero": 0, "method": "", "statistic": math.nan, "p": math.nan,
                           "kendall_w": math.nan, "flag": ""}
    if k < 3:
        row["flag"] = f"Friedman needs at least 3 losses, got {k}"
        return row
    untied = int(np.sum(np.ptp(block, axis=1) > 0)) if n else 0
    row["n_nonzero"] = untied
    if n < min_pairs:
        row["flag"] = f"too few complete cases: n = {n} < {min_pairs}"
        return row
    if untied == 0:
        row["flag"] = "every case ties all losses"
        return row
    best = float(stats.chi2.sf(untied * (k - 1), k - 1))
    if best > alpha:
        row["flag"] = (f"too few untied cases: {untied}, smallest attainable p = {best:.3g} > alpha = {alpha:g}")
        return row
    res = stats.friedmanchisquare(*block.T)
    row.update(method="chi2", statistic=float(res.statistic), p=float(res.pvalue),
               kendall_w=float(res.statistic) / (n * (k - 1)))
    return row


def _satterthwaite(terms: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """V = Σ c·MS and its Satterthwaite degrees of freedom V² / Σ (c·MS)² / df (terms: c, MS, df)."""
    v = float(sum(c * ms for c, ms, _ in terms))
    den = float(sum((c * ms) ** 2 / df for c, ms, df in terms if df > 0))
    df = v * v / den if den > 0 else math.inf
    # a negative term (MS_res subtracted) can push the approximation below the df of every mean square
    # that carries the variance; never go below the smallest df of the positive terms
    floor = min((d for c, _, d in terms if c > 0 and d > 0), default=1.0)
    return v, max(df, float(floor))


def _twoway_ms(y: np.ndarray) -> tuple[float, float, float]:
    """Mean squares of rows (runs), columns (cases) and residual of a complete R × C table."""
    r, c = y.shape
    m = y.mean()
    rows = y.mean(axis=1)
    cols = y.mean(axis=0)
    ms_r = c * float(np.sum((rows - m) ** 2)) / (r - 1) if r > 1 else math.nan
    ms_c = r * float(np.sum((cols - m) ** 2)) / (c - 1) if c > 1 else math.nan
    resid = y - rows[:, None] - cols[None, :] + m
    ms_e = float(np.sum(resid**2)) / ((r - 1) * (c - 1)) if r > 1 and c > 1 else math.nan
    return ms_r, ms_c, ms_e


def twoway_variance(ya: np.ndarray, yb: np.ndarray, *, paired: bool) -> tuple[float, float, str]:
    """Variance of mean(ya) − mean(yb) with runs and cases random, its df, and the design used.

    ``ya``: R_a runs × C cases of the candidate, ``yb``: R_b × C of the baseline, complete.

    - ``paired`` (run i of A and run i of B share fold and seed, R ≥ 2): on D = ya − yb,
      D_rc = θ + a_r + b_c + e_rc (run, case and residual random effects), so
      Var(mean D) = σ_a²/R + σ_b²/C + σ_e²/(RC), estimated by (MS_cases + max(MS_runs − MS_res, 0)) / (RC);
    - unpaired runs: case part S²(d̄_c)/C of the run-averaged per-case differences, plus for each loss
      max(MS_runs − MS_res, 0)/(C·R) from its own runs × cases table; a loss with a single run
      borrows the run variance of the other loss (assumed equal);
    - a single run per loss: S²(d_c)/C only — training variance cannot be assessed.

    Degrees of freedom by Satterthwaite's approximation over the mean squares used.
    """
    ra, c = ya.shape
    rb = yb.shape[0]
    if paired and ra == rb and ra >= 2:
        ms_r, ms_c, ms_e = _twoway_ms(ya - yb)
        terms = [(1.0 / (ra * c), ms_c, c - 1)]
        if ms_r > ms_e:
            terms += [(1.0 / (ra * c), ms_r, ra - 1), (-1.0 / (ra * c), ms_e, (ra - 1) * (c - 1))]
        v, df = _satterthwaite(terms)
        return v, df, "paired runs"
    d = ya.mean(axis=0) - yb.mean(axis=0)
    terms = [(1.0 / c, float(np.var(d, ddof=1)), c - 1)]
    comps = {}
    for name, y in (("a", ya), ("b", yb)):
        if y.shape[0] >= 2:
            ms_r, _, ms_e = _twoway_ms(y)
            comps[name] = (ms_r, ms_e, y.shape[0])
    if not comps:
        v, df = _satterthwaite(terms)
        return v, df, "one run per loss"
    for name, y in (("a", ya), ("b", yb)):
        ms_r, ms_e, r_own = comps.get(name, next(iter(comps.values())))
        if ms_r > ms_e:  # σ_u²/R_L = (MS_r − MS_e) / (C · R_own) · R_own / R_L
            scale = 1.0 / (c * y.shape[0])
            terms += [(scale, ms_r, r_own - 1), (-scale, ms_e, (r_own - 1) * (c - 1))]
    v, df = _satterthwaite(terms)
    return v, df, "unpaired runs" if len(comps) == 2 else "unpaired runs, run variance borrowed"


def twoway_pair(
    ya: np.ndarray,
    yb: np.ndarray,
    *,
    paired: bool = True,
    alpha: float = 0.05,
    min_pairs: int = MIN_PAIRS,
    simultaneous: float | None = None,
) -> dict[str, Any]:
    """The primary test: candidate (``ya``, runs × cases) against baseline (``yb``), runs and cases random.

    Cases with a NaN in any run of either loss are left out. The estimate is the mean paired
    difference θ̂ = mean(ya) − mean(yb) over runs and cases; t = θ̂ / √V̂ with V̂ and its df from
    :func:`twoway_variance`, two-sided p from Student's t; CI θ̂ ± t_df(1 − alpha/2) √V̂ (and at
    ``simultaneous`` instead of alpha for ``sci_low``/``sci_high``).
    """
    from scipy import stats

    ya = np.atleast_2d(np.asarray(ya, dtype=np.float64))
    yb = np.atleast_2d(np.asarray(yb, dtype=np.float64))
    if ya.shape[1] != yb.shape[1]:
        raise ValueError(f"the two losses have different numbers of cases: {ya.shape[1]} and {yb.shape[1]}")
    keep = ~(np.isnan(ya).any(axis=0) | np.isnan(yb).any(axis=0))
    ya, yb = ya[:, keep], yb[:, keep]
    c = int(keep.sum())
    row: dict[str, Any] = {
        "n": c, "n_runs_a": int(ya.shape[0]), "n_runs_b": int(yb.shape[0]), "n_nonzero": math.nan, "method": "",
        "statistic": math.nan, "df": math.nan, "p": math.nan, "min_p": 0.0,
        "mean_a": float(ya.mean()) if c else math.nan, "mean_b": float(yb.mean()) if c else math.nan,
        "median_a": float(np.median(ya.mean(axis=0))) if c else math.nan,
        "median_b": float(np.median(yb.mean(axis=0))) if c else math.nan,
        "mean_diff": math.nan, "median_diff": math.nan, "estimate": math.nan, "ci_low": math.nan,
        "ci_high": math.nan, "sci_low": math.nan, "sci_high": math.nan, "rank_biserial": math.nan, "flag": "",
    }
    if c == 0:
        row["flag"] = "no case with a value for every run of both losses"
        return row
    d_case = np.round(ya.mean(axis=0) - yb.mean(axis=0), DECIMALS)
    theta = float(np.round(ya.mean() - yb.mean(), DECIMALS))
    row.update(mean_diff=theta, median_diff=float(np.median(d_case)), estimate=theta,
               n_nonzero=int(np.sum(d_case != 0)), rank_biserial=rank_biserial(d_case))
    if c < min_pairs:
        row["flag"] = f"too few cases: n = {c} < {min_pairs}"
        return row
    v, df, design = twoway_variance(ya, yb, paired=paired)
    row["method"] = f"two-way t ({design})"
    row["df"] = df
    if not v > 0:
        row.update(statistic=0.0 if theta == 0 else math.copysign(math.inf, theta), p=1.0 if theta == 0 else 0.0,
                   ci_low=theta, ci_high=theta, sci_low=theta, sci_high=theta)
        return row
    se = math.sqrt(v)
    t = theta / se
    row["statistic"] = t
    row["p"] = float(2.0 * stats.t.sf(abs(t), df))
    half = float(stats.t.isf(alpha / 2.0, df)) * se
    row["ci_low"], row["ci_high"] = theta - half, theta + half
    if simultaneous is not None:
        half = float(stats.t.isf(simultaneous / 2.0, df)) * se
        row["sci_low"], row["sci_high"] = theta - half, theta + half
    return row


def tarone_select(min_p: np.ndarray, alpha: float) -> tuple[np.ndarray, int]:
    """Tarone (1990): the tests that can pass the family's threshold, and that threshold's K.

    K is the smallest k with #{i : min_p_i <= alpha/k} <= k; tests whose smallest attainable
    p-value exceeds alpha/K can never be rejected and are left out of the family (they are not run
    as part of it, so they cannot dilute the correction of the others). NaN min_p: not a candidate.
    """
    min_p = np.asarray(min_p, dtype=np.float64)
    cand = ~np.isnan(min_p)
    m = int(cand.sum())
    for k in range(1, m + 1):
        keep = cand & (min_p <= alpha / k)
        if int(keep.sum()) <= k:
            return keep, k
    return cand, max(m, 1)


def family_correct(
    p: np.ndarray, min_p: np.ndarray, *, method: str = "holm", alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Tarone's selection, then ``method`` over the selected tests (one family).

    Returns (p_adjusted, reject, unreachable: tested but left out by Tarone, K).
    """
    p = np.asarray(p, dtype=np.float64)
    min_p = np.where(np.isnan(p), np.nan, np.asarray(min_p, dtype=np.float64))
    keep, k = tarone_select(min_p, alpha)
    adjusted, reject = adjust_pvalues(np.where(keep, p, np.nan), method=method, alpha=alpha)
    return adjusted, reject, (~np.isnan(p)) & ~keep, k


def friedman_ranks(block: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Ranks within each block (row), 1 = best, average ranks for ties."""
    from scipy.stats import rankdata

    block = np.round(np.asarray(block, dtype=np.float64), DECIMALS)
    return rankdata(-block if higher_is_better else block, axis=1)


def nemenyi(block: np.ndarray, higher_is_better: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nemenyi's all-pairs test after Friedman (Demšar 2006): (mean ranks, k × k p-values).

    q_ij = |R̄_i − R̄_j| / √(k(k+1)/(6N)), p = P(studentized range(k, ∞) ≥ √2 · q_ij) — the same
    numbers as ``scikit_posthocs.posthoc_nemenyi_friedman``. The p-values are simultaneous over the
    k(k−1)/2 pairs (single-step); no further correction.
    """
    from scipy.stats import studentized_range

    ranks = friedman_ranks(block, higher_is_better)
    n, k = ranks.shape
    mean = ranks.mean(axis=0)
    q = np.abs(mean[:, None] - mean[None, :]) / math.sqrt(k * (k + 1) / (6.0 * n))
    p = studentized_range.sf(q * math.sqrt(2.0), k, np.inf)
    np.fill_diagonal(p, 1.0)
    return mean, np.minimum(p, 1.0)


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Critical difference of mean ranks (Demšar 2006): q_α/√2 · √(k(k+1)/(6N))."""
    from scipy.stats import studentized_range

    return float(studentized_range.isf(alpha, k, np.inf)) / math.sqrt(2.0) * math.sqrt(k * (k + 1) / (6.0 * n))


def conover(block: np.ndarray, higher_is_better: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Conover's all-pairs test after Friedman (Conover 1999): (mean ranks, unadjusted k × k p-values).

    t_ij = |R_i − R_j| / √(A·B) with rank sums R, S² = (ΣR²_ij − Nk(k+1)²/4)/(k − 1),
    T² = Σ(R_j − N(k+1)/2)²/S², A = 2N(k−1)S²/df, B = 1 − T²/(N(k−1)), df = (N−1)(k−1); two-sided
    Student p — ``scikit_posthocs.posthoc_conover_friedman(p_adjust=None)``. Holm is applied by the caller.
    """
    from scipy.stats import t as student

    ranks = friedman_ranks(block, higher_is_better)
    n, k = ranks.shape
    sums = ranks.sum(axis=0)
    s2 = (float(np.sum(ranks**2)) - k * n * (k + 1) ** 2 / 4.0) / (k - 1)
    p = np.ones((k, k))
    if s2 > 0:
        t2 = float(np.sum((sums - n * (k + 1) / 2.0) ** 2)) / s2
        df = (n - 1) * (k - 1)
        a = s2 * 2.0 * n * (k - 1) / df
        b = 1.0 - t2 / (n * (k - 1))
        if a * b > 0:
            t = np.abs(sums[:, None] - sums[None, :]) / math.sqrt(a * b)
            p = 2.0 * student.sf(t, df)
        else:  # every block ranks the losses identically: the pairs are as separated as they can be
            p = np.where(sums[:, None] == sums[None, :], 1.0, 0.0)
    np.fill_diagonal(p, 1.0)
    return ranks.mean(axis=0), p


def rank_stability(
    tables: Mapping[str, np.ndarray], *, higher_is_better: bool = True, n_boot: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of each loss's rank (1 = best) by its mean over runs and cases.

    ``tables``: loss -> runs × cases (the same cases, complete). Each bootstrap sample draws the
    cases with replacement (shared by all losses) and, independently per loss, its runs with
    replacement (runs and cases both random, as in Owen's pigeonhole bootstrap); the losses are
    ranked by their resampled means. Returns loss -> counts of rank 1 .. k over ``n_boot`` samples.
    """
    from scipy.stats import rankdata

    names = list(tables)
    k = len(names)
    rng = np.random.default_rng(seed)
    c = next(iter(tables.values())).shape[1]
    w = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(np.float64)  # B × C case weights
    means = np.empty((n_boot, k))
    for j, name in enumerate(names):
        y = tables[name]
        r = y.shape[0]
        v = rng.multinomial(r, np.full(r, 1.0 / r), size=n_boot).astype(np.float64)  # B × R run weights
        means[:, j] = np.einsum("br,rc,bc->b", v, y, w) / (r * c)
    ranks = rankdata(-means if higher_is_better else means, axis=1, method="min").astype(int)
    return {name: np.bincount(ranks[:, j], minlength=k + 1)[1:] for j, name in enumerate(names)}


def paired_tests(
    df: pd.DataFrame,
    metrics: Sequence[str],
    *,
    by: str | Iterable[str] = ("network",),
    strata: Mapping[str, str] | None = None,
    loss_col: str = "loss",
    unit: str | Iterable[str] = ("case_id",),
    baseline: str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
    min_pairs: int = MIN_PAIRS,
    n_boot: int = 2000,
    seed: int = 0,
    friedman: bool = True,
    level_order: Mapping[str, Mapping[Any, float]] | None = None,
) -> pd.DataFrame:
    """Every paired comparison of losses per group × stratum level × metric, corrected as one family.

    Args:
        df: per-case table (one row per case and run, or already one per unit).
        metrics: metric columns to compare.
        by: grouping columns (comparisons never cross groups), e.g. ``["network"]``.
        strata: stratum name -> column of case-level labels, e.g. ``{"count": "stratum_count"}``;
            the whole group is always compared too, as stratum and level ``"all"``.
        loss_col: the column naming the loss.
        unit: columns identifying a pair (see the module docstring); duplicates are averaged.
        baseline: compare every loss with this one only (``loss_a`` = baseline); otherwise every pair
            of losses in sorted order.
        alpha, correction: level and multipletests method of the family.
        min_pairs: minimum pairs (or Friedman blocks) for a test to be run.
        n_boot: bootstrap resamples of the median-difference CI (0: no CI).
        seed: seed of the bootstrap.
        friedman: add a Friedman test per group × level × metric when there are ≥ 3 losses.
        level_order: optional per stratum column, level -> sort key (default: ``none`` first, then
            by name).

    Returns:
        one row per test, the grouping columns then :data:`TEST_COLUMNS`.
    """
    import pandas as pd

    by = _as_tuple(by)
    unit = _as_tuple(unit)
    strata = dict(strata or {})
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    data = aggregate(df, metrics, by=by, loss_col=loss_col, unit=unit, carry=strata.values())
    rows: list[dict[str, Any]] = []
    groups = data.groupby(list(by), sort=True, dropna=False) if by else [((), data)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        head = dict(zip(by, key, strict=True))
        losses = _ordered_losses(group[loss_col], baseline)
        if baseline is not None:
            pairs = [(baseline, other) for other in losses[1:]] if baseline in losses else []
        else:
            pairs = list(itertools.combinations(losses, 2))
        for stratum, column in [(ALL, None), *strata.items()]:
            if column is None:
                levels = [ALL]
            else:
                order = (level_order or {}).get(column)
                levels = ordered_levels(group[column].dropna(), order)
            for level in levels:
                sub = group if column is None else group[group[column] == level]
                wide_all = sub.pivot(index=list(unit), columns=loss_col, values=list(metrics))
                for metric in metrics:
                    wide = wide_all[metric]
                    values = {c: wide[c].to_numpy(dtype=np.float64) for c in wide.columns}
                    for a, b in pairs:
                        xa, xb = _pair_arrays(values, a, b)
                        tag = (*key, stratum, level, metric, a, b)
                        result = wilcoxon_pair(xa, xb, alpha=alpha, min_pairs=min_pairs, n_boot=n_boot,
                                               seed=_row_seed(seed, tag))
                        rows.append({**head, "test": "wilcoxon", "stratum": stratum, "level": level,
                                     "metric": metric, "loss_a": a, "loss_b": b, **result})
                    if friedman and len(losses) >= 3:
                        if all(loss in wide.columns for loss in losses):
                            block = wide[losses].dropna().to_numpy(dtype=np.float64)
                        else:
                            block = np.empty((0, len(losses)))
                        result = friedman_block(block, alpha=alpha, min_pairs=min_pairs)
                        rows.append({**head, "test": "friedman", "stratum": stratum, "level": level,
                                     "metric": metric, "loss_a": ",".join(losses), "loss_b": "", **result})
    tests = pd.DataFrame(rows, columns=[*by, *TEST_COLUMNS])
    return correct(tests, method=correction, alpha=alpha)


def adjust_pvalues(p: np.ndarray, *, method: str = "holm", alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values and rejections over the non-NaN entries of ``p`` (NaN: not tested).

    The same numbers as ``statsmodels.stats.multitest.multipletests`` (holm, bonferroni, fdr_bh;
    tested against it), computed here because multipletests runs ``gc.collect()`` on every call,
    which costs ~40 ms — more than the tests themselves when a comparison has hundreds of families.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64)
    tested = ~np.isnan(p)
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    q = p[tested]
    m = q.size
    if m:
        order = np.argsort(q, kind="mergesort")
        sorted_p = q[order]
        if method == "bonferroni":
            adj = np.minimum(sorted_p * m, 1.0)
        elif method == "holm":
            adj = np.minimum(np.maximum.accumulate(sorted_p * (m - np.arange(m))), 1.0)
        else:  # fdr_bh
            adj = np.minimum(np.minimum.accumulate((sorted_p * m / np.arange(1, m + 1))[::-1])[::-1], 1.0)
        out = np.empty(m)
        out[order] = adj
        adjusted[tested] = out
        reject[tested] = out <= alpha
    return adjusted, reject


def correct(tests: pd.DataFrame, *, method: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """Fill ``p_adjusted`` and ``significant`` over every row with a p-value (the family)."""
    out = tests.copy()
    out["p_adjusted"], out["significant"] = adjust_pvalues(out["p"].to_numpy(dtype=np.float64), method=method,
                                                           alpha=alpha)
    return out


def describe(
    df: pd.DataFrame,
    metrics: Sequence[str],
    *,
    by: str | Iterable[str] = ("network",),
    strata: Mapping[str, str] | None = None,
    loss_col: str = "loss",
    level_order: Mapping[str, Mapping[Any, float]] | None = None,
) -> pd.DataFrame:
    """Per group × stratum level × loss × metric: n, mean, sd (ddof 1), median, q1, q3 of ``df``'s rows.

    ``df`` should hold one row per unit (the output of :func:`aggregate`), so that these are the
    numbers the tests compare.
    """
    import pandas as pd

    by = _as_tuple(by)
    strata = dict(strata or {})
    rows = []
    for stratum, column in [(ALL, None), *strata.items()]:
        if column is None:
            parts = [(ALL, df)]
        else:
            order = (level_order or {}).get(column)
            parts = [(level, df[df[column] == level]) for level in ordered_levels(df[column].dropna(), order)]
        for level, part in parts:
            for key, group in part.groupby([*by, loss_col], sort=True, dropna=False):
                key = key if isinstance(key, tuple) else (key,)
                head = dict(zip([*by, loss_col], key, strict=True))
                for metric in metrics:
                    vals = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=np.float64)
                    vals = vals[~np.isnan(vals)]
                    n = int(vals.size)
                    rows.append({
                        **head, "stratum": stratum, "level": level, "metric": metric, "n": n,
                        "mean": float(vals.mean()) if n else math.nan,
                        "sd": float(vals.std(ddof=1)) if n > 1 else math.nan,
                        "median": float(np.median(vals)) if n else math.nan,
                        "q1": float(np.quantile(vals, 0.25)) if n else math.nan,
                        "q3": float(np.quantile(vals, 0.75)) if n else math.nan,
                    })
    columns = [*by, loss_col, "stratum", "level", "metric", "n", "mean", "sd", "median", "q1", "q3"]
    return pd.DataFrame(rows, columns=columns)

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

Wilcoxon signed-rank test (:func:`wilcoxon_pair`)
-------------------------------------------------
``scipy.stats.wilcoxon`` on the non-zero differences, two-sided, ``zero_method="wilcox"`` (zero
differences are dropped before ranking, Wilcoxon's original treatment and R's ``wilcox.test``);
absolute differences are ranked with average ranks for ties. The method is chosen explicitly:

- ``exact``: no ties among the |d| and at most 50 non-zero differences — the exact null distribution;
- ``exact-permutation``: ties and at most 13 non-zero differences — ``scipy.stats.PermutationMethod``,
  which enumerates all 2**n sign flips (≤ 8192 < its 9999 resamples), so the p-value is exact and
  deterministic;
- ``normal``: otherwise — the normal approximation with the tie-corrected variance and without
  continuity correction.

The reported ``statistic`` is scipy's two-sided statistic min(T+, T−).

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

Correction (:func:`correct`)
----------------------------
``statsmodels.stats.multitest.multipletests`` over **every test that was run** in the table
(all groups, strata, levels, metrics, Wilcoxon and Friedman together): ``holm`` (default; strong
family-wise error control), ``bonferroni`` (the study's choice) or ``fdr_bh`` (Benjamini–Hochberg
false discovery rate). ``significant`` is multipletests' reject decision at ``alpha``.

Effect sizes
------------
- ``median_diff``: median of all paired differences A − B (zeros included), with a percentile
  bootstrap confidence interval at level 1 − alpha (``scipy.stats.bootstrap``, ``n_boot``
  resamples, seeded per row from ``seed`` and the row's key, so results do not depend on the order
  in which tests are run). The interval is per test, not adjusted for multiplicity.
- ``mean_diff``: mean paired difference.
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
import warnings
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
#: Largest number of tied non-zero differences tested by full enumeration of the 2**n sign flips.
PERMUTATION_MAX = 13

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


def wilcoxon_pair(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    min_pairs: int = MIN_PAIRS,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired samples ``a`` and ``b`` with effect sizes (module docstring).

    Pairs with a NaN on either side are dropped. Returns the test-specific fields of a row of
    :func:`paired_tests`: n, n_nonzero, method, statistic, p, means, medians, mean_diff, median_diff,
    ci_low, ci_high, rank_biserial, flag ("" when the test was run).
    """
    from scipy import stats

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
        "mean_a": float(a.mean()) if n else math.nan, "mean_b": float(b.mean()) if n else math.nan,
        "median_a": float(np.median(a)) if n else math.nan, "median_b": float(np.median(b)) if n else math.nan,
        "mean_diff": float(d.mean()) if n else math.nan, "median_diff": float(np.median(d)) if n else math.nan,
        "ci_low": math.nan, "ci_high": math.nan, "rank_biserial": rank_biserial(d), "flag": "",
    }
    if n < min_pairs:
        row["flag"] = f"too few pairs: n = {n} < {min_pairs}"
        return row
    if min_attainable_p(n_nz) > alpha:
        row["flag"] = (f"too few non-zero differences: {n_nz} of {n} pairs differ, smallest attainable "
                       f"p = {min_attainable_p(n_nz):.3g} > alpha = {alpha:g}")
        return row
    ties = np.unique(np.abs(nz)).size < n_nz
    if not ties and n_nz <= 50:
        row["method"] = "exact"
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method="exact")
        row["statistic"], row["p"] = float(res.statistic), float(res.pvalue)
    elif n_nz <= PERMUTATION_MAX:
        row["method"] = "exact-permutation"
        row["statistic"], row["p"] = _signed_rank_permutation(nz)
    else:
        row["method"] = "normal"
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method="asymptotic",
                             correction=False)
        row["statistic"], row["p"] = float(res.statistic), float(res.pvalue)
    if n_boot > 0:
        row["ci_low"], row["ci_high"] = _median_ci(d, 1.0 - alpha, n_boot, seed)
    return row


def _signed_rank_permutation(nz: np.ndarray) -> tuple[float, float]:
    """Two-sided exact signed-rank test of non-zero differences with ties, by all 2**n sign flips.

    The same p-value as ``scipy.stats.wilcoxon(nz, method=scipy.stats.PermutationMethod())`` (scipy's
    choice for tied samples of n <= 13), but the ranks of |d| — which sign flips do not change — are
    computed once instead of once per flip, which makes it ~30 times faster.
    """
    from scipy import stats

    ranks = stats.rankdata(np.abs(nz))

    def t_plus(d: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum((d > 0) * ranks, axis=axis)

    res = stats.permutation_test((nz,), t_plus, permutation_type="samples", vectorized=True,
                                 n_resamples=np.inf, alternative="two-sided")
    total = float(ranks.sum())
    t = float(t_plus(nz))
    return min(t, total - t), float(res.pvalue)


def _median_ci(d: np.ndarray, level: float, n_boot: int, seed: int) -> tuple[float, float]:
    from scipy import stats

    if d.size == 0:
        return math.nan, math.nan
    if np.ptp(d) == 0:  # every difference equal: the bootstrap distribution is a point
        return float(d[0]), float(d[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (d,), np.median, n_resamples=n_boot, confidence_level=level, method="percentile",
            vectorized=True, rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


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
    """Adjusted p-values and rejections over the non-NaN entries of ``p`` (NaN: not tested)."""
    from statsmodels.stats.multitest import multipletests

    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64)
    tested = ~np.isnan(p)
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    if tested.any():
        reject[tested], adjusted[tested], _, _ = multipletests(p[tested], alpha=alpha, method=method)
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

"""The pre-specified families of ``lossbench compare``: which tests are confirmatory, which are not.

Pure pandas / numpy (no MLflow). :func:`build_tests` takes the per-case table (one row per run ×
test case) and returns one row per test, each labelled with its ``analysis`` and ``family``:

Analyses
--------
- ``primary`` (test ``twoway``): the default and only confirmatory analysis. Candidate and baseline
  are compared on the runs × cases table of each loss, **training runs and cases both random**
  (:func:`lossbench.compare.stats.twoway_pair`): the estimate is the mean paired difference over
  runs and cases, its variance has a run part and a case part (two-way random-effects model,
  method-of-moments variance components, Satterthwaite df). Runs of the two losses are paired by
  (fold, seed) when both losses have the same set of them.
- ``secondary`` (test ``wilcoxon``): the per-case Wilcoxon signed-rank test on the run-averaged
  values (``--seeds mean``; or, labelled pseudo-replicated, one pair per case × fold × seed with
  ``--seeds each``), with the Hodges–Lehmann estimate and its exact CI. It treats the runs as fixed:
  a difference between these particular runs, not between the losses. Reported beside the primary
  test, never instead of it.
- ``ranking`` (tests ``friedman`` and ``nemenyi`` / ``conover``): Friedman's test on the
  run-averaged per-case values (cases random), its all-pairs post-hoc test, and the
  critical-difference diagram; the bootstrap rank stability treats runs and cases as random.

Families (each corrected on its own with ``--correction``, after Tarone's selection)
----------------------------------------------------------------------------------
- ``confirmatory``: each loss against the baseline, on the primary metric, all cases, every network;
- ``stratum:<name>`` (count, volume, activity, spread): the same comparisons within every level of
  that stratum dimension (networks × levels × candidates): one family per dimension, a declared
  per-family correction (the error rate is controlled within each dimension's family; across the
  four dimensions it is at most 4 α);
- ``omnibus``: Friedman on the primary metric, all cases, one test per network;
- ``posthoc``: the all-pairs post-hoc test of a network, significant only when that network's
  omnibus test is (Nemenyi's p-values are simultaneous already; Conover's are Holm-adjusted);
- ``exploratory``: everything else — other metrics, other pairs of losses, strata of other metrics,
  Friedman tests other than the omnibus ones, the absolute biomarker errors. Corrected as one family
  per analysis so that the numbers are not raw, but labelled exploratory: hypothesis-generating,
  never part of a claim.

The primary and the secondary analyses get the same families, each corrected separately.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lossbench.compare.stats import (
    ALL,
    DECIMALS,
    MIN_PAIRS,
    conover,
    family_correct,
    friedman_block,
    hodges_lehmann,
    nemenyi,
    nemenyi_cd,
    ordered_levels,
    rank_stability,
    twoway_pair,
    wilcoxon_pair,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONTROLLED",
    "TEST_COLUMNS",
    "Ranking",
    "better_label",
    "build_tests",
    "higher_is_better",
    "worst_value",
]

#: Columns of the test table after ``network``.
TEST_COLUMNS = (
    "family", "analysis", "test", "stratum", "level", "metric", "loss_a", "loss_b", "n", "n_runs_a", "n_runs_b",
    "n_nonzero", "method", "statistic", "df", "p", "min_p", "p_adjusted", "significant", "estimate", "ci_low",
    "ci_high", "sci_low", "sci_high", "better", "mean_a", "mean_b", "median_a", "median_b", "mean_diff",
    "median_diff", "rank_biserial", "kendall_w", "flag",
)

#: Families whose error rate is controlled (their significant results may be claimed).
CONTROLLED = ("confirmatory", "omnibus", "posthoc")

_HIGHER = ("dice", "f1", "sensitivity", "precision", "tp")
_LOWER = ("fp", "fn", "abserr_")
_UNIT_RANGE = ("dice", "f1", "sensitivity", "precision")


def higher_is_better(metric: str) -> bool | None:
    """Direction of "better": True for Dice, F1, sensitivity, precision, TP; False for FP, FN, FP/FN
    volume and absolute biomarker errors; None (no direction) for predicted biomarkers and others."""
    if metric.startswith("abserr_"):
        return False
    base = metric.split("_c")[0] if "_c" in metric and metric.rsplit("_c", 1)[-1].isdigit() else metric
    if base in _HIGHER:
        return True
    if base.startswith(("fp", "fn")):
        return False
    return None


def worst_value(metric: str, values: np.ndarray) -> float:
    """What ``--missing worst`` puts in place of a missing value: 0 for rates in [0, 1] where higher
    is better; otherwise the worst value observed (largest FP count or error, smallest other)."""
    direction = higher_is_better(metric)
    base = metric.split("_c")[0]
    if direction is True and base in _UNIT_RANGE:
        return 0.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    return float(finite.max() if direction is False else finite.min())


def better_label(metric: str, estimate: float, candidate: str, baseline: str) -> str:
    """Which loss the estimate (candidate − baseline) favours, by the metric's direction."""
    direction = higher_is_better(metric)
    if direction is None or estimate is None or not np.isfinite(estimate) or estimate == 0:
        return ""
    return candidate if (estimate > 0) == direction else baseline


class Ranking:
    """Friedman ranking of one network on the primary metric (for the CD diagram and rank plots)."""

    def __init__(self, network: str, losses: list[str], mean_ranks: np.ndarray, p: np.ndarray, cd: float,
                 n: int, posthoc: str, stability: dict[str, np.ndarray] | None) -> None:
        self.network, self.losses, self.mean_ranks, self.p, self.cd = network, losses, mean_ranks, p, cd
        self.n, self.posthoc, self.stability = n, posthoc, stability


def _run_tables(group: pd.DataFrame, metrics: Sequence[str], cases: list[str]) -> dict[str, tuple[list, np.ndarray]]:
    """loss -> (run keys (fold, seed) sorted, array metrics × runs × cases) of one network."""
    out = {}
    index = {c: i for i, c in enumerate(cases)}
    for loss, part in group.groupby("loss", sort=True):
        keys = sorted({(str(f), str(s)) for f, s in zip(part["fold"], part["seed"], strict=True)})
        pos = {k: i for i, k in enumerate(keys)}
        arr = np.full((len(metrics), len(keys), len(cases)), np.nan)
        r = np.array([pos[(str(f), str(s))] for f, s in zip(part["fold"], part["seed"], strict=True)])
        c = np.array([index[x] for x in part["case_id"]])
        for m, metric in enumerate(metrics):
            arr[m, r, c] = part[metric].to_numpy(dtype=np.float64)
        out[str(loss)] = (keys, arr)
    return out


def _pairs(losses: list[str], baseline: str | None, explicit: bool) -> list[tuple[str, str, bool]]:
    """(candidate, baseline-or-other, is-a-baseline-pair)."""
    if baseline in losses:
        out = [(loss, baseline, True) for loss in losses if loss != baseline]
    else:
        out = []
    if not explicit or baseline not in losses:
        rest = [x for x in losses if x != baseline]
        out += [(b, a, False) for a, b in itertools.combinations(sorted(rest), 2)]
    return out


def build_tests(
    cases: pd.DataFrame,
    metrics: Sequence[str],
    *,
    primary: str,
    baseline: str | None,
    explicit_baseline: bool,
    strata: Mapping[str, str],
    level_order: Mapping[str, Mapping[Any, float]] | None = None,
    all_only: Sequence[str] = (),
    seeds: str = "mean",
    alpha: float = 0.05,
    correction: str = "holm",
    min_pairs: int = MIN_PAIRS,
    posthoc: str = "nemenyi",
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[Ranking]]:
    """Every test of the comparison, labelled and corrected by family (module docstring).

    ``cases``: one row per run × case with loss, network, fold, seed, case_id, the metrics and the
    stratum columns. ``all_only``: metrics tested on all cases only (not per stratum).
    """
    import pandas as pd

    metrics = list(dict.fromkeys([*metrics, *all_only]))
    rows: list[dict[str, Any]] = []
    diffs: dict[int, np.ndarray] = {}  # row -> paired differences of a Wilcoxon row (for simultaneous HL CIs)
    ses: dict[int, tuple[float, float]] = {}  # row -> (se, df) of a two-way row
    rankings: list[Ranking] = []
    for network, group in cases.groupby("network", sort=True):
        network = str(network)
        losses = sorted(group["loss"].unique())
        if baseline in losses:  # baseline first, as in the report
            losses.remove(baseline)
            losses.insert(0, baseline)
        if len(losses) < 2:
            continue
        case_ids = sorted(group["case_id"].unique())
        case_strata = group.drop_duplicates("case_id").set_index("case_id")
        tables = _run_tables(group, metrics, case_ids)
        pairs = _pairs(losses, baseline, explicit_baseline)
        for stratum, column in [(ALL, None), *strata.items()]:
            if column is None:
                levels = [ALL]
            else:
                levels = ordered_levels(case_strata[column].dropna(), (level_order or {}).get(column))
            for level in levels:
                if column is None:
                    cols = np.arange(len(case_ids))
                else:
                    labels = case_strata.loc[case_ids, column].to_numpy()
                    cols = np.nonzero(labels == level)[0]
                for m, metric in enumerate(metrics):
                    if column is not None and metric in all_only:
                        continue
                    for cand, base, is_base in pairs:
                        keys_a, arr_a = tables[cand]
                        keys_b, arr_b = tables[base]
                        ya, yb = arr_a[m][:, cols], arr_b[m][:, cols]
                        paired = keys_a == keys_b
                        head = {"network": network, "stratum": stratum, "level": level, "metric": metric,
                                "loss_a": cand, "loss_b": base, "is_base": is_base}
                        res = twoway_pair(ya, yb, paired=paired, alpha=alpha, min_pairs=min_pairs)
                        if res["method"] and res["p"] == res["p"]:
                            ses[len(rows)] = ((res["ci_high"] - res["ci_low"]) / 2.0, res["df"])
                        rows.append({**head, "analysis": "primary", "test": "twoway", **res})
                        # secondary: per-case Wilcoxon
                        if seeds == "each":
                            common = [k for k in keys_a if k in set(keys_b)]
                            ia = [keys_a.index(k) for k in common]
                            ib = [keys_b.index(k) for k in common]
                            xa, xb = ya[ia].ravel(), yb[ib].ravel()
                        else:
                            xa, xb = _nanmean(ya), _nanmean(yb)
                        res = wilcoxon_pair(xa, xb, alpha=alpha, min_pairs=min_pairs)
                        keep = ~(np.isnan(xa) | np.isnan(xb))
                        diffs[len(rows)] = np.round(xa[keep] - xb[keep], DECIMALS)
                        res.update(n_runs_a=len(keys_a), n_runs_b=len(keys_b), df=math.nan)
                        rows.append({**head, "analysis": "secondary", "test": "wilcoxon", **res})
                    if len(losses) >= 3:
                        block = np.column_stack([_nanmean(tables[x][1][m][:, cols]) for x in losses])
                        block = block[~np.isnan(block).any(axis=1)] if block.size else np.empty((0, len(losses)))
                        res = friedman_block(block, alpha=alpha, min_pairs=min_pairs)
                        res["min_p"] = _friedman_min_p(res, len(losses))
                        rows.append({"network": network, "stratum": stratum, "level": level, "metric": metric,
                                     "loss_a": ",".join(losses), "loss_b": "", "is_base": False,
                                     "analysis": "ranking", "test": "friedman", **res})
                        if stratum == ALL and metric == primary and len(block) >= 2:
                            rankings.append(_ranking(network, losses, block, tables, m, metric, posthoc,
                                                     alpha, n_boot, seed))
                            rows += _posthoc_rows(network, metric, losses, block, posthoc)
    tests = pd.DataFrame(rows)
    if tests.empty:
        return pd.DataFrame(columns=["network", *TEST_COLUMNS]), rankings
    tests["family"] = [_family(r, primary) for r in tests.itertuples()]
    tests = _correct(tests, alpha=alpha, correction=correction)
    _simultaneous(tests, diffs, ses, alpha)
    tests["better"] = [better_label(r.metric, r.estimate, r.loss_a, r.loss_b) if r.test in ("twoway", "wilcoxon")
                       else "" for r in tests.itertuples()]
    for col in TEST_COLUMNS:
        if col not in tests.columns:
            tests[col] = math.nan
    tests["flag"] = tests["flag"].fillna("")
    return tests[["network", *TEST_COLUMNS]], rankings


def _nanmean(y: np.ndarray) -> np.ndarray:
    """Per-case mean over runs, NaN where no run has a value."""
    with np.errstate(invalid="ignore"):
        count = np.sum(~np.isnan(y), axis=0)
        total = np.nansum(y, axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _friedman_min_p(res: Mapping[str, Any], k: int) -> float:
    from scipy import stats

    untied = res.get("n_nonzero") or 0
    return float(stats.chi2.sf(untied * (k - 1), k - 1)) if untied else 1.0


def _family(r: Any, primary: str) -> str:
    if r.test in ("nemenyi", "conover"):
        return "posthoc"
    if r.test == "friedman":
        return "omnibus" if (r.metric == primary and r.stratum == ALL) else "exploratory"
    if r.metric != primary or not r.is_base:
        return "exploratory"
    return "confirmatory" if r.stratum == ALL else f"stratum:{r.stratum}"


def _correct(tests: pd.DataFrame, *, alpha: float, correction: str) -> pd.DataFrame:
    tests = tests.copy()
    tests["p_adjusted"] = math.nan
    tests["significant"] = False
    tests["flag"] = tests["flag"].fillna("")
    for (analysis, family), part in tests.groupby(["analysis", "family"], sort=False):
        if family == "posthoc":
            continue
        adjusted, reject, unreachable, k = family_correct(part["p"].to_numpy(dtype=np.float64),
                                                          part["min_p"].to_numpy(dtype=np.float64),
                                                          method=correction, alpha=alpha)
        tests.loc[part.index, "p_adjusted"] = adjusted
        tests.loc[part.index, "significant"] = reject
        for idx in part.index[unreachable]:
            tests.at[idx, "flag"] = (f"cannot reach significance in its family: smallest attainable p = "
                                     f"{tests.at[idx, 'min_p']:.3g} > α/K = {alpha / k:.3g} (Tarone, K = {k}); "
                                     "left out of the correction")
    omnibus = tests[(tests["family"] == "omnibus")].set_index("network")["significant"].to_dict()
    for network, part in tests[tests["family"] == "posthoc"].groupby("network"):
        p = part["p"].to_numpy(dtype=np.float64)
        if part["test"].iloc[0] == "conover":
            from lossbench.compare.stats import adjust_pvalues

            adjusted, _ = adjust_pvalues(p, method="holm", alpha=alpha)
        else:
            adjusted = p
        tests.loc[part.index, "p_adjusted"] = adjusted
        gate = bool(omnibus.get(network, False))
        tests.loc[part.index, "significant"] = gate & (adjusted <= alpha)
        if not gate:
            tests.loc[part.index, "flag"] = "omnibus (Friedman) not significant: post-hoc not interpreted"
    return tests


def _simultaneous(tests: pd.DataFrame, diffs: Mapping[int, np.ndarray], ses: Mapping[int, tuple[float, float]],
                  alpha: float) -> None:
    """Bonferroni-simultaneous CIs (level 1 − α/m, m tests in the family) for the controlled pair families."""
    from scipy import stats

    for (_, family), part in tests.groupby(["analysis", "family"], sort=False):
        if not (family == "confirmatory" or family.startswith("stratum:")):
            continue
        tested = part[part["p_adjusted"].notna()]
        m = max(len(tested), 1)
        level = alpha / m
        for idx in tested.index:
            est = tests.at[idx, "estimate"]
            if idx in ses:
                se, df = ses[idx]
                half = float(stats.t.isf(level / 2.0, df)) * se / float(stats.t.isf(alpha / 2.0, df))
                tests.at[idx, "sci_low"], tests.at[idx, "sci_high"] = est - half, est + half
            elif idx in diffs:
                _, lo, hi = hodges_lehmann(diffs[idx], 1.0 - level)
                tests.at[idx, "sci_low"], tests.at[idx, "sci_high"] = lo, hi


def _posthoc_rows(network: str, metric: str, losses: list[str], block: np.ndarray, posthoc: str) -> list[dict]:
    from lossbench.compare.families import higher_is_better as direction

    hib = direction(metric) is not False
    mean, p = (nemenyi if posthoc == "nemenyi" else conover)(block, hib)
    n, k = block.shape
    if posthoc == "nemenyi":
        from scipy.stats import studentized_range

        q = (k - 1) / math.sqrt(k * (k + 1) / (6.0 * n))
        min_p = float(studentized_range.sf(q * math.sqrt(2.0), k, np.inf))
    else:
        min_p = 0.0
    rows = []
    for i, j in itertools.combinations(range(k), 2):
        rows.append({"network": network, "stratum": ALL, "level": ALL, "metric": metric, "loss_a": losses[i],
                     "loss_b": losses[j], "is_base": False, "analysis": "ranking", "test": posthoc, "n": n,
                     "method": "studentized range" if posthoc == "nemenyi" else "t", "p": float(p[i, j]),
                     "min_p": min_p, "statistic": float(mean[i] - mean[j]), "mean_a": float(mean[i]),
                     "mean_b": float(mean[j]), "flag": ""})
    return rows


def _ranking(network: str, losses: list[str], block: np.ndarray, tables: Mapping[str, tuple[list, np.ndarray]],
             m: int, metric: str, posthoc: str, alpha: float, n_boot: int, seed: int) -> Ranking:
    hib = higher_is_better(metric) is not False
    mean, p = (nemenyi if posthoc == "nemenyi" else conover)(block, hib)
    n, k = block.shape
    stability = None
    if n_boot > 0:
        arrays = {x: tables[x][1][m] for x in losses}
        complete = ~np.any([np.isnan(a).any(axis=0) for a in arrays.values()], axis=0)
        if complete.sum() >= 2:
            stability = rank_stability({x: a[:, complete] for x, a in arrays.items()}, higher_is_better=hib,
                                       n_boot=min(n_boot, 1000), seed=seed)
    return Ranking(network, losses, mean, p, nemenyi_cd(k, n, alpha), n, posthoc, stability)

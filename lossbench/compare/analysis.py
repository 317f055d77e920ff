"""From the per-case tables of several runs to the comparison: strata, tests, summary, agreement.

Pure pandas (no MLflow): :func:`compare_cases` takes the concatenated per-case tables, one row per
(run, test case), with the run's ``loss``, ``network``, ``fold`` and ``seed`` as columns, and
returns a :class:`Comparison`.

- Strata are recomputed from the GT columns of the unique test cases (``--strata fixed``: the
  a-priori edges of :mod:`lossbench.evaluation.strata`; ``quantile``: tertiles over the unique cases,
  not over the runs' repeated rows). A case must have the same ground truth in every run. Cases
  without any GT lesion form the level ``none`` of the lesion-count stratum only: their volume,
  activity and spread are all 0, and testing them again in those strata would repeat the same test.
- Units (what is paired, see :mod:`lossbench.compare.stats`): ``seeds="mean"`` — one unit per test
  case, each loss's value being the mean over all its runs of that network (folds × seeds);
  ``seeds="each"`` — one unit per (case, fold, seed), so run (fold f, seed s) of loss A is paired with
  run (fold f, seed s) of loss B.
- Networks are never mixed: every test compares losses within one network. A network with a single
  loss is left out of the tests (noted), not out of the agreement table.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lossbench.compare import DEFAULT_METRICS
from lossbench.compare.agreement import BIOMARKERS, agreement_table
from lossbench.compare.stats import MIN_PAIRS, aggregate, describe
from lossbench.errors import LossbenchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_METRICS",
    "STRATA",
    "Comparison",
    "available_metrics",
    "compare_cases",
    "default_baseline",
    "parse_metrics",
]

#: Stratum name -> per-case column (added by lossbench.evaluation.stratify).
STRATA: dict[str, str] = {
    "count": "stratum_count",
    "volume": "stratum_volume",
    "activity": "stratum_activity",
    "spread": "stratum_spread",
}


_NOT_METRICS = {"case_id", "criterion", "iou_threshold", "connectivity", "voxel_volume_ml"}


def available_metrics() -> list[str]:
    """Per-case columns that can be compared between losses (GT columns are the same for every loss)."""
    from lossbench.evaluation.case import CASE_COLUMNS

    names = [c for c in CASE_COLUMNS if c not in _NOT_METRICS and not c.startswith("gt_")]
    return names + [f"abserr_{b}" for b in BIOMARKERS]  # |pred − GT|, computed by compare_cases


def parse_metrics(text: str | Sequence[str] | None) -> list[str]:
    """``"dice,f1"`` -> ``["dice", "f1"]``, checked against :func:`available_metrics`."""
    if text is None or text == "":
        return list(DEFAULT_METRICS)
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    names = list(dict.fromkeys(n for n in names if n))
    known = available_metrics()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LossbenchError(f"unknown metric {name!r}{hint} Metrics: {', '.join(known)}")
    if not names:
        raise LossbenchError("--metrics is empty")
    return names


@dataclasses.dataclass
class Comparison:
    """Everything a report shows."""

    tests: pd.DataFrame  # one row per test (stats.paired_tests)
    summary: pd.DataFrame  # per network × stratum level × loss × metric (stats.describe)
    agreement: pd.DataFrame  # per network × loss × biomarker (agreement.agreement_table)
    units: pd.DataFrame  # the paired units: one row per network × loss × unit, metrics averaged
    runs: pd.DataFrame  # one row per run compared
    metrics: list[str]
    losses: dict[str, list[str]]  # network -> losses, baseline first
    level_order: dict[str, dict[Any, float]]  # stratum column -> level -> sort key
    options: dict[str, Any]
    notes: list[str]
    rankings: list[Any] = dataclasses.field(default_factory=list)  # families.Ranking per network
    single_run: list[str] = dataclasses.field(default_factory=list)  # networks with one run per loss

    @property
    def unit(self) -> tuple[str, ...]:
        return ("case_id",) if self.options["seeds"] == "mean" else ("case_id", "fold", "seed")


def _check_ground_truth(cases: pd.DataFrame, gt_cols: list[str]) -> None:
    for col in gt_cols:
        values = cases[["case_id", col]].copy()
        values[col] = np.round(values[col].astype(np.float64), 6)
        spread = values.groupby("case_id")[col].nunique(dropna=False)
        bad = spread[spread > 1]
        if len(bad):
            case = bad.index[0]
            runs = cases.loc[cases["case_id"] == case, "run_id"].unique()[:2]
            raise LossbenchError(
                f"case {case!r} has a different {col} in runs {', '.join(map(str, runs))}: the runs were not "
                "evaluated on the same test set; choose comparable runs with --parent or --runs"
            )


def _restratify(cases: pd.DataFrame, scheme: str) -> pd.DataFrame:
    from lossbench.evaluation.strata import STRATA as SOURCES
    from lossbench.evaluation.strata import stratify

    unique = cases.drop_duplicates("case_id")[["case_id", *SOURCES.values()]].reset_index(drop=True)
    labelled = stratify(unique, scheme)
    for column in SOURCES:
        if column != "stratum_count":  # no GT lesion: level "none" of the count stratum only
            labelled[column] = labelled[column].where(labelled[column] != "none")
    out = cases.drop(columns=[c for c in SOURCES if c in cases.columns])
    return out.merge(labelled[["case_id", *SOURCES]], on="case_id", how="left", validate="many_to_one")


def _level_order(cases: pd.DataFrame) -> dict[str, dict[Any, float]]:
    from lossbench.evaluation.strata import STRATA as SOURCES

    order: dict[str, dict[Any, float]] = {}
    for column, source in SOURCES.items():
        mins = cases.groupby(column)[source].min()
        order[column] = {level: float(v) for level, v in mins.items()}
    return order


def default_baseline(losses: Sequence[str]) -> str:
    """The baseline when ``--baseline`` is not given: ``l1dfl`` when compared, else the first loss (by name)."""
    names = sorted(losses)
    return "l1dfl" if "l1dfl" in names else names[0]


def _apply_missing(cases: pd.DataFrame, metrics: Sequence[str], policy: str, notes: list[str]) -> pd.DataFrame:
    """``drop``: NaN values stay missing (left out pairwise). ``worst``: every missing value — NaN in a
    table, or a case absent from one run's table — becomes the metric's worst value in its network."""
    import pandas as pd

    from lossbench.compare.families import worst_value

    counts = {m: int(cases[m].isna().sum()) for m in metrics}
    if policy == "drop":
        shown = ", ".join(f"{m} {n}" for m, n in counts.items() if n)
        if shown:
            notes.append(f"--missing drop: missing values left out pairwise ({shown} of {len(cases)} run × case rows)")
        return cases
    parts = []
    filled = dict.fromkeys(metrics, 0)
    for _, group in cases.groupby("network", sort=True):
        runs = group[["run_id", "loss", "network", "fold", "seed"]].drop_duplicates("run_id")
        ids = pd.DataFrame({"case_id": sorted(group["case_id"].unique())})
        grid = runs.merge(ids, how="cross")
        full = grid.merge(group.drop(columns=["loss", "network", "fold", "seed"]), on=["run_id", "case_id"],
                          how="left")
        per_case = group.drop_duplicates("case_id").set_index("case_id")
        for col in full.columns:  # case-level columns (GT, strata) of the added rows
            if col.startswith(("gt_", "stratum_")) and full[col].isna().any():
                full[col] = full[col].fillna(full["case_id"].map(per_case[col]))
        for m in metrics:
            values = pd.to_numeric(full[m], errors="coerce").astype(np.float64)
            filled[m] += int(values.isna().sum())
            full[m] = values.fillna(worst_value(m, values.to_numpy()))
        parts.append(full)
    shown = ", ".join(f"{m} {n}" for m, n in filled.items() if n)
    notes.append("--missing worst: every missing value set to the metric's worst value in its network "
                 "(0 for Dice, F1, sensitivity, precision; the largest observed FP/FN count or volume)"
                 + (f": {shown} run × case values" if shown else ": none was missing"))
    return pd.concat(parts, ignore_index=True)


def compare_cases(
    cases: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    runs: pd.DataFrame | None = None,
    baseline: str | None = None,
    primary: str = "dice",
    correction: str = "holm",
    alpha: float = 0.05,
    seeds: str = "mean",
    strata: str = "fixed",
    min_pairs: int = MIN_PAIRS,
    n_boot: int = 1000,
    seed: int = 0,
    margin: float = 0.20,
    missing: str = "drop",
    posthoc: str = "nemenyi",
    ba_scale: str = "linear",
) -> Comparison:
    """Compare the losses of ``cases`` (rows: run × test case, columns loss, network, fold, seed, ...)."""
    import pandas as pd

    from lossbench.compare.families import build_tests
    from lossbench.evaluation.strata import STRATA as SOURCES

    metrics = list(metrics)
    if primary not in metrics:
        metrics.insert(0, primary)
    if seeds not in ("mean", "each"):
        raise LossbenchError(f"--seeds must be 'mean' or 'each', got {seeds!r}")
    if missing not in ("drop", "worst"):
        raise LossbenchError(f"--missing must be 'drop' or 'worst', got {missing!r}")
    if posthoc not in ("nemenyi", "conover"):
        raise LossbenchError(f"--posthoc must be 'nemenyi' or 'conover', got {posthoc!r}")
    if ba_scale not in ("linear", "log"):
        raise LossbenchError(f"--ba-scale must be 'linear' or 'log', got {ba_scale!r}")
    if not 0.0 < alpha < 1.0:
        raise LossbenchError(f"--alpha must be in (0, 1), got {alpha}")
    if min_pairs < 1:
        raise LossbenchError(f"--min-pairs must be at least 1, got {min_pairs}")
    needed = ["case_id", "loss", "network", "fold", "seed", "run_id", *SOURCES.values(),
              *(m for m in metrics if not m.startswith("abserr_")),
              *(f"{w}_{m[len('abserr_'):]}" for m in metrics if m.startswith("abserr_") for w in ("gt", "pred"))]
    missing_cols = [c for c in needed if c not in cases.columns]
    if missing_cols:
        raise LossbenchError(f"the per-case tables lack column(s) {', '.join(missing_cols)}")
    if cases.empty:
        raise LossbenchError("the per-case tables of the selected runs are empty")
    notes: list[str] = []
    cases = cases.copy()
    cases["case_id"] = cases["case_id"].astype(str)
    biomarkers = [b for b in BIOMARKERS if f"gt_{b}" in cases.columns and f"pred_{b}" in cases.columns]
    if len(biomarkers) < len(BIOMARKERS):
        notes.append(f"agreement left out for biomarker(s) without gt_/pred_ columns: "
                     f"{', '.join(b for b in BIOMARKERS if b not in biomarkers)}")
    _check_ground_truth(cases, [c for c in cases.columns if c.startswith("gt_")])
    cases = _restratify(cases, strata)
    level_order = _level_order(cases)
    abserr = [f"abserr_{b}" for b in biomarkers if f"abserr_{b}" not in metrics]
    for b in biomarkers:  # the paired comparison of absolute biomarker error between losses
        cases[f"abserr_{b}"] = (pd.to_numeric(cases[f"pred_{b}"], errors="coerce")
                                - pd.to_numeric(cases[f"gt_{b}"], errors="coerce")).abs()

    all_losses = sorted(cases["loss"].unique())
    if len(all_losses) < 2:
        raise LossbenchError(
            f"only one loss ({all_losses[0]}) among the {cases['run_id'].nunique()} selected run(s): nothing to compare"
        )
    if baseline is not None and baseline not in all_losses:
        raise LossbenchError(f"--baseline {baseline!r} is not among the losses compared: {', '.join(all_losses)}")
    explicit = baseline is not None
    baseline = baseline if explicit else default_baseline(all_losses)

    losses: dict[str, list[str]] = {}
    single_run: list[str] = []
    for network, group in cases.groupby("network", sort=True):
        names = sorted(group["loss"].unique())
        if baseline in names:
            names.remove(baseline)
            names.insert(0, baseline)
        losses[str(network)] = names
        if len(names) < 2:
            notes.append(f"network {network}: only loss {names[0]}; left out of the tests")
            continue
        if baseline not in names:
            notes.append(f"network {network}: no run of the baseline {baseline}; no confirmatory test there, "
                         "its pairs are exploratory")
        per_loss = group.groupby("loss")["run_id"].nunique()
        if per_loss.nunique() > 1:
            counts = ", ".join(f"{loss} {n}" for loss, n in per_loss.items())
            notes.append(f"network {network}: losses have different numbers of runs ({counts})"
                         + ("; per-case values are means over unequal numbers of runs" if seeds == "mean" else ""))
        if (per_loss == 1).all():
            single_run.append(str(network))
        case_sets = group.groupby("loss")["case_id"].apply(frozenset)
        every = frozenset.intersection(*case_sets)
        for loss, ids in case_sets.items():
            if len(ids) > len(every):
                notes.append(f"network {network}: loss {loss} has {len(ids) - len(every)} test case(s) that other "
                             "losses lack; pairs use the cases both losses have")
    testable = [n for n, names in losses.items() if len(names) >= 2]
    if not testable:
        raise LossbenchError("no network has runs of two losses: nothing to compare (each network: "
                             + "; ".join(f"{n}: {', '.join(v)}" for n, v in losses.items()) + ")")
    for network in single_run:
        notes.append(f"network {network}: one training run per loss, so training (seed-to-seed) variance cannot "
                     "be assessed: the primary test treats only the cases as random, and its verdicts hold for "
                     "these particular runs, not for the losses in general")
    if seeds == "each":
        notes.append("--seeds each: the secondary Wilcoxon analysis pairs every (case, fold, seed); pairs of one "
                     "case are not independent (pseudo-replication), so its p-values are optimistic")
    cases = _apply_missing(cases, [*metrics, *abserr], missing, notes)

    unit = ("case_id",) if seeds == "mean" else ("case_id", "fold", "seed")
    test_cases = cases[cases["network"].isin(testable)]
    strata_cols = dict(STRATA)
    tests, rankings = build_tests(
        test_cases, metrics, primary=primary, baseline=baseline, explicit_baseline=explicit, strata=strata_cols,
        level_order=level_order, all_only=abserr, seeds=seeds, alpha=alpha, correction=correction,
        min_pairs=min_pairs, posthoc=posthoc, n_boot=n_boot, seed=seed,
    )
    units = aggregate(cases, metrics, by=("network",), unit=unit, carry=strata_cols.values())
    summary = describe(units, metrics, by=("network",), strata=strata_cols, level_order=level_order)
    agreement = agreement_table(cases, biomarkers, by=("network",), unit=unit, margin=margin, alpha=alpha,
                                correction=correction, min_pairs=min_pairs, scale=ba_scale, n_boot=n_boot,
                                seed=seed) if biomarkers else pd.DataFrame()
    if runs is None:
        runs = cases[["run_id", "loss", "network", "fold", "seed"]].drop_duplicates().reset_index(drop=True)
    options = {
        "metrics": metrics, "primary": primary, "baseline": baseline, "baseline_given": explicit,
        "correction": correction, "alpha": alpha, "seeds": seeds, "strata": strata, "min_pairs": min_pairs,
        "n_boot": n_boot, "seed": seed, "margin": margin, "missing": missing, "posthoc": posthoc,
        "ba_scale": ba_scale, "unit": list(unit),
    }
    return Comparison(
        tests=tests, summary=summary, agreement=agreement, units=units, runs=runs, metrics=metrics, losses=losses,
        level_order=level_order, options=options, notes=notes, rankings=rankings, single_run=single_run,
    )


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: 3 significant digits, '–' for NaN."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_p(value: Any) -> str:
    """p-values: '<0.001' below 0.001, else 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3g}"

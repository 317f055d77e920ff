"""``lossbench compare``: paired, stratified, corrected statistics of losses from the MLflow runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from lossbench.cli._options import StrataScheme


class Correction(str, Enum):
    holm = "holm"
    bonferroni = "bonferroni"
    fdr_bh = "fdr_bh"


class Seeds(str, Enum):
    mean = "mean"
    each = "each"


METRICS_HELP = (
    "Per-case metrics to compare, comma-separated (default: dice,f1,sensitivity,precision,fp,fn,fp_volume_ml,"
    "fn_volume_ml); any metric column of evaluation/cases.csv, e.g. f1_c1, tp or pred_tmtv_ml."
)


def _default_out(experiment: str) -> Path:
    import re

    return Path(f"lossbench-report-{re.sub(r'[^A-Za-z0-9._-]+', '-', experiment).strip('-') or 'experiment'}")


def compare(
    experiment: str = typer.Option("lossbench", "--experiment", help="MLflow experiment of the runs."),
    parent: str = typer.Option(None, "--parent", help="Compare the finished cell runs of this matrix run."),
    runs: str = typer.Option(None, "--runs", help="Compare exactly these run ids (comma-separated)."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: SQLite store under $LOSSBENCH_HOME)."
    ),
    metrics: str = typer.Option(None, "--metrics", help=METRICS_HELP),
    baseline: str = typer.Option(
        None, "--baseline", help="Compare every loss with this one only (e.g. l1dfl) instead of every pair."
    ),
    correction: Correction = typer.Option(
        Correction.holm, "--correction",
        help="Multiple-comparison correction over all tests run: holm, bonferroni (the study's) or fdr_bh.",
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise (or FDR) level; CIs are at 1 - alpha."),
    seeds: Seeds = typer.Option(
        Seeds.mean, "--seeds",
        help="mean: one pair per test case, each loss averaged over its runs (folds × seeds); "
        "each: one pair per (case, fold, seed).",
    ),
    strata: StrataScheme = typer.Option(
        StrataScheme.fixed, "--strata", help="Strata edges: a-priori 'fixed' ones or tertiles of the test cases."
    ),
    min_pairs: int = typer.Option(6, "--min-pairs", help="Fewest pairs for a test to be run (else flagged)."),
    n_boot: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples of the median-difference CI (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    out: Path = typer.Option(
        None, "--out", help="Report folder (default: ./lossbench-report-EXPERIMENT); an earlier report there "
        "is replaced once the new one is complete."
    ),
) -> None:
    """Compare losses on the same test cases: Wilcoxon / Friedman per network × stratum × metric,
    corrected; effect sizes; biomarker agreement (CCC, Bland–Altman, TOST); report folder + MLflow run."""
    import datetime
    import traceback

    from lossbench import __version__
    from lossbench.cli._common import console, err_console
    from lossbench.compare.analysis import compare_cases, parse_metrics
    from lossbench.compare.loader import load_cases, open_store, parse_run_ids, runs_frame, select_runs
    from lossbench.compare.publish import finish_comparison_run, start_comparison_run
    from lossbench.compare.report import atomic_folder, check_out_folder, write_report
    from lossbench.errors import LossbenchError

    if not 0.0 < alpha < 1.0:
        raise LossbenchError(f"--alpha must be in (0, 1), got {alpha}")
    if min_pairs < 1:
        raise LossbenchError(f"--min-pairs must be at least 1, got {min_pairs}")
    if n_boot < 0:
        raise LossbenchError(f"--bootstrap must be 0 or more, got {n_boot}")
    if parent and runs:
        raise LossbenchError("give either --parent or --runs, not both")
    metric_names = parse_metrics(metrics)
    run_ids = parse_run_ids(runs) if runs else None
    out = out if out is not None else _default_out(experiment)
    check_out_folder(out)

    status = err_console()
    with status.status("reading the runs from MLflow…"):
        tracker = open_store(tracking_uri, experiment)
        records, notes = select_runs(tracker, parent=parent, run_ids=run_ids)
        cases = load_cases(tracker, records)
    with status.status(f"comparing {len(records)} runs…"):
        comp = compare_cases(
            cases, metric_names, runs=runs_frame(records), baseline=baseline, correction=correction.value,
            alpha=alpha, seeds=seeds.value, strata=strata.value, min_pairs=min_pairs, n_boot=n_boot, seed=seed,
        )
    comp.notes[:0] = notes
    selection = (f"children of matrix run {parent}" if parent else "runs given with --runs" if run_ids
                 else "all finished cell runs")
    tested = int(comp.tests["p"].notna().sum())
    counts = {"n_tests": float(tested), "n_significant": float(comp.tests["significant"].sum()),
              "n_flagged": float((comp.tests["flag"] != "").sum()), "n_runs": float(len(records))}
    with status.status("writing the report…"), atomic_folder(out) as tmp:
        run_id = start_comparison_run(tracker, [r.run_id for r in records], comp.options, selection=selection,
                                      parent=parent)
        try:
            context = {
                "experiment": experiment, "tracking_uri": tracker.uri, "selection": selection,
                "comparison_run_id": run_id, "version": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "compared_runs": [r.run_id for r in records],
            }
            write_report(comp, tmp, context)
            finish_comparison_run(tracker, run_id, tmp, counts)
        except BaseException as exc:
            tracker.fail(run_id, f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=6))
            raise
    _print(console(), comp, out, run_id)


def _print(out_console, comp, folder: Path, run_id: str) -> None:  # noqa: ANN001 - rich objects, lazily imported
    from rich.table import Table

    from lossbench.compare.analysis import fmt, fmt_p
    from lossbench.compare.stats import ALL

    unit = "case" if comp.options["seeds"] == "mean" else "case × fold × seed"
    for note in comp.notes:
        out_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for network, losses in comp.losses.items():
        s = comp.summary[(comp.summary["network"] == network) & (comp.summary["stratum"] == ALL)]
        table = Table(title=f"{network}: mean (median) over all cases, one value per {unit}", title_justify="left")
        table.add_column("loss", style="bold cyan")
        table.add_column("n", justify="right")
        for metric in comp.metrics:
            table.add_column(metric, justify="right")
        for loss in losses:
            part = s[s["loss"] == loss].set_index("metric")
            n = int(part["n"].max()) if len(part) else 0
            table.add_row(loss, str(n), *[f"{fmt(part.at[m, 'mean'])} ({fmt(part.at[m, 'median'])})"
                                          if m in part.index else "–" for m in comp.metrics])
        out_console.print(table)
        if len(losses) < 2:
            continue
        t = comp.tests
        sig = t[(t["network"] == network) & (t["test"] == "wilcoxon") & t["significant"]]
        if sig.empty:
            out_console.print(f"{network}: no significant paired difference after correction", highlight=False)
            continue
        table = Table(title=f"{network}: significant paired differences ({len(sig)}), A − B",
                      title_justify="left")
        for col in ("stratum", "metric", "A − B", "n", "median diff [CI]", "rank-biserial", "p adj."):
            table.add_column(col, justify="left" if col in ("stratum", "metric", "A − B") else "right")
        shown = sig.sort_values("p_adjusted").head(20)
        for r in shown.itertuples():
            stratum = ALL if r.stratum == ALL else f"{r.stratum} {r.level}"
            table.add_row(stratum, r.metric, f"{r.loss_a} − {r.loss_b}", str(r.n),
                          f"{fmt(r.median_diff)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]", fmt(r.rank_biserial),
                          fmt_p(r.p_adjusted))
        out_console.print(table)
        if len(sig) > len(shown):
            out_console.print(f"… and {len(sig) - len(shown)} more in tests.csv", highlight=False)
    a = comp.agreement
    if not a.empty:
        table = Table(title="agreement with GT: Lin's CCC; ≡ TOST-equivalent within ±"
                      f"{100 * comp.options['margin']:g} % of the GT mean (corrected)", title_justify="left")
        table.add_column("network")
        table.add_column("loss", style="bold cyan")
        biomarkers = list(dict.fromkeys(a["biomarker"]))
        for b in biomarkers:
            table.add_column(b, justify="right")
        for (network, loss), part in a.groupby(["network", "loss"], sort=True):
            part = part.set_index("biomarker")
            table.add_row(network, loss, *[f"{fmt(part.at[b, 'ccc'])}{' ≡' if part.at[b, 'equivalent'] else ''}"
                                           for b in biomarkers])
        out_console.print(table)
    t = comp.tests
    out_console.print(
        f"{int(t['p'].notna().sum())} tests run, {int(t['significant'].sum())} significant after "
        f"{comp.options['correction']} correction, {int((t['flag'] != '').sum())} flagged as too small to test",
        highlight=False,
    )
    out_console.print(f"report: {folder.resolve()}\nMLflow comparison run: {run_id}", markup=False, highlight=False)

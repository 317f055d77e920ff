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


class Missing(str, Enum):
    drop = "drop"
    worst = "worst"


class Posthoc(str, Enum):
    nemenyi = "nemenyi"
    conover = "conover"


class BAScale(str, Enum):
    linear = "linear"
    log = "log"


METRICS_HELP = (
    "Per-case metrics to compare, comma-separated (default: dice,f1,sensitivity,precision,fp,fn,fp_volume_ml,"
    "fn_volume_ml); any metric column of evaluation/cases.csv, e.g. f1_c1, tp or pred_tmtv_ml."
)


def _default_out(experiment: str) -> Path:
    import re

    return Path(f"lossbench-report-{re.sub(r'[^A-Za-z0-9._-]+', '-', experiment).strip('-') or 'experiment'}")


def compare(
    experiment: str = typer.Option("lossbench", "--experiment", envvar="MLFLOW_EXPERIMENT_NAME",
                                   help="MLflow experiment of the runs."),
    parent: str = typer.Option(None, "--parent", help="Compare the finished cell runs of this matrix run."),
    runs: str = typer.Option(None, "--runs", help="Compare exactly these run ids (comma-separated)."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: SQLite store under $LOSSBENCH_HOME)."
    ),
    metrics: str = typer.Option(None, "--metrics", help=METRICS_HELP),
    baseline: str = typer.Option(
        None, "--baseline",
        help="The reference of the confirmatory family: every loss is compared with it (only with it when given). "
        "Default: l1dfl when compared, else the first loss by name (and then every other pair is exploratory).",
    ),
    primary: str = typer.Option("dice", "--primary", help="Primary metric of the confirmatory family."),
    correction: Correction = typer.Option(
        Correction.holm, "--correction",
        help="Correction within each pre-specified family: holm, bonferroni (the study's) or fdr_bh.",
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise (or FDR) level of each family; CIs at 1 - alpha."),
    seeds: Seeds = typer.Option(
        Seeds.mean, "--seeds",
        help="Unit of the secondary per-case Wilcoxon analysis: mean: one pair per test case, each loss averaged "
        "over its runs; each: one pair per (case, fold, seed) (pseudo-replicated). The primary test always "
        "treats runs and cases as random.",
    ),
    missing: Missing = typer.Option(
        Missing.drop, "--missing",
        help="Missing values: drop (left out pairwise) or worst (the metric's worst value, e.g. Dice 0).",
    ),
    posthoc: Posthoc = typer.Option(Posthoc.nemenyi, "--posthoc", help="Post-hoc test after Friedman."),
    ba_scale: BAScale = typer.Option(
        BAScale.linear, "--ba-scale",
        help="Bland–Altman scale: linear (pred − GT) or log (ln pred − ln GT, ratios; for TMTV, TLA).",
    ),
    strata: StrataScheme = typer.Option(
        StrataScheme.fixed, "--strata", help="Strata edges: a-priori 'fixed' ones or tertiles of the test cases."
    ),
    min_pairs: int = typer.Option(6, "--min-pairs", help="Fewest pairs for a test to be run (else flagged)."),
    n_boot: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap resamples of the rank stability and the TDI CI (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstraps."),
    out: Path = typer.Option(
        None, "--out", help="Report folder (default: ./lossbench-report-EXPERIMENT); an earlier report there "
        "is replaced once the new one is complete."
    ),
) -> None:
    """Compare losses on the same test cases: a pre-specified confirmatory family (runs and cases random),
    strata families, Friedman ranking, exploratory rest; effect sizes with CIs; biomarker agreement
    (CCC, Bland–Altman, TOST, TDI); report folder + MLflow run."""
    import datetime
    import traceback

    from lossbench import __version__
    from lossbench.cli._common import console, err_console
    from lossbench.compare.analysis import compare_cases, parse_metrics
    from lossbench.compare.loader import (
        load_cases,
        load_pictures,
        open_store,
        parse_run_ids,
        runs_frame,
        select_runs,
    )
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
    primary_name = parse_metrics(primary)[0]
    run_ids = parse_run_ids(runs) if runs else None
    out = out if out is not None else _default_out(experiment)
    check_out_folder(out)

    status = err_console()
    with status.status("reading the runs from MLflow…"):
        tracker = open_store(tracking_uri, experiment)
        records, notes = select_runs(tracker, parent=parent, run_ids=run_ids)
        cases = load_cases(tracker, records)
        pictures, picture_notes = load_pictures(tracker, records, cases)
    with status.status(f"comparing {len(records)} runs…"):
        comp = compare_cases(
            cases, metric_names, runs=runs_frame(records), baseline=baseline, primary=primary_name,
            correction=correction.value, alpha=alpha, seeds=seeds.value, strata=strata.value, min_pairs=min_pairs,
            n_boot=n_boot, seed=seed, missing=missing.value, posthoc=posthoc.value, ba_scale=ba_scale.value,
        )
    comp.notes[:0] = notes + picture_notes
    selection = (f"children of matrix run {parent}" if parent else "runs given with --runs" if run_ids
                 else "all finished cell runs")
    tested = int(comp.tests["p_adjusted"].notna().sum())
    controlled = comp.tests["family"].isin(["confirmatory", "omnibus", "posthoc"])
    counts = {"n_tests": float(tested), "n_significant": float(comp.tests.loc[controlled, "significant"].sum()),
              "n_confirmatory_significant": float(comp.tests.loc[(comp.tests["family"] == "confirmatory")
                                                                 & (comp.tests["analysis"] == "primary"),
                                                                 "significant"].sum()),
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
            write_report(comp, tmp, context, pictures=pictures)
            finish_comparison_run(tracker, run_id, tmp, counts, [r.run_id for r in records])
        except BaseException as exc:
            tracker.fail(run_id, f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=6))
            raise
    _print(console(), comp, out, run_id)


def _print(out_console, comp, folder: Path, run_id: str) -> None:
    from rich.table import Table

    from lossbench.compare.analysis import fmt
    from lossbench.compare.report import headline
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
        fams = t["family"].eq("confirmatory") | t["family"].str.startswith("stratum:")
        sig = t[(t["network"] == network) & (t["analysis"] == "primary") & fams & t["significant"]]
        if sig.empty:
            out_console.print(f"{network}: no significant paired difference in the confirmatory or strata families",
                              highlight=False)
            continue
        table = Table(title=f"{network}: significant paired differences ({len(sig)}), primary test, "
                      "candidate − baseline", title_justify="left")
        for col in ("family", "stratum", "metric", "candidate − baseline", "n", "estimate [simult. CI]", "better",
                    "p adj."):
            table.add_column(col, justify="right" if col in ("n", "estimate [simult. CI]", "p adj.") else "left")
        shown = sig.sort_values("p_adjusted").head(20)
        for r in shown.itertuples():
            stratum = ALL if r.stratum == ALL else f"{r.stratum} {r.level}"
            table.add_row(r.family, stratum, r.metric, f"{r.loss_a} − {r.loss_b}", str(r.n),
                          f"{fmt(r.estimate)} [{fmt(r.sci_low)}, {fmt(r.sci_high)}]", r.better or "–",
                          f"{r.p_adjusted:.3g}")
        out_console.print(table)
        if len(sig) > len(shown):
            out_console.print(f"… and {len(sig) - len(shown)} more in tests.csv", highlight=False)
    a = comp.agreement
    if not a.empty:
        table = Table(title="agreement with GT: Lin's CCC; ≡ TOST-equivalent within ±"
                      f"{100 * comp.options['margin']:g} % (corrected)", title_justify="left")
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
    for line in headline(comp):
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)
    t = comp.tests
    out_console.print(
        f"{int(t['p_adjusted'].notna().sum())} tests in families ({comp.options['correction']} per family), "
        f"{int((t['flag'] != '').sum())} flagged as not testable; exploratory rows in tests.csv",
        highlight=False,
    )
    out_console.print(f"report: {folder.resolve()}\nMLflow comparison run: {run_id}", markup=False, highlight=False)

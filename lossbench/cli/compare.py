"""``lossbench compare``: paired, stratified, corrected statistics of losses from the MLflow runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from lossbench.cli._options import Json, StrataScheme


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
    as_json: Json = False,
) -> None:
    """Compare losses on the same test cases: a pre-specified confirmatory family (runs and cases random),
    strata families, Friedman ranking, exploratory rest; effect sizes with CIs; biomarker agreement
    (CCC, Bland–Altman, TOST, TDI); report folder + MLflow run."""
    from lossbench import api
    from lossbench.cli._common import console, err_console, json_mode, print_json

    with json_mode(as_json) as stdout:
        status = err_console().status("checking the options…")
        with status:
            result = api.compare(
                experiment=experiment, parent=parent, runs=runs, tracking_uri=tracking_uri, metrics=metrics,
                baseline=baseline, primary=primary, correction=correction.value, alpha=alpha, seeds=seeds.value,
                missing=missing.value, posthoc=posthoc.value, ba_scale=ba_scale.value, strata=strata.value,
                min_pairs=min_pairs, n_boot=n_boot, seed=seed, out=out, on_status=status.update,
            )
        if as_json:
            print_json(result.as_dict(), stdout)
            return
        _print(console(), result.comparison, result.out, result.run_id)


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

"""The report folder: CSV tables, plots, ``report.md`` and a self-contained ``report.html``.

The folder (:func:`write_report`) holds

- ``tests.csv`` — every test (tested or flagged), :data:`lossbench.compare.stats.TEST_COLUMNS`;
- ``agreement.csv`` — biomarker agreement per network × loss (:mod:`lossbench.compare.agreement`);
- ``summary.csv`` — n, mean, SD, median, quartiles per network × stratum level × loss × metric;
- ``runs.csv`` — the runs compared;
- ``plots/*.png`` — per network and metric a box-and-strip plot by loss in every stratum, and a
  forest plot of the median paired differences with their bootstrap CIs;
- ``report.md`` (links the PNGs and CSVs) and ``report.html`` (everything inline, the plots as
  base64 PNG, no external resource);
- ``lossbench-report.json`` — what produced the folder; its presence is what lets a later
  ``lossbench compare`` replace the folder.

:func:`atomic_folder` builds the folder in a temporary sibling and renames it into place only
when it is complete; an existing report folder is replaced at that moment, never before.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.compare.analysis import STRATA, fmt, fmt_p
from lossbench.compare.stats import ALL
from lossbench.errors import LossbenchError

if TYPE_CHECKING:
    import pandas as pd

    from lossbench.compare.analysis import Comparison

__all__ = ["MARKER", "atomic_folder", "check_out_folder", "methods_text", "write_report"]

MARKER = "lossbench-report.json"

STRATUM_TITLES = {
    ALL: "all cases",
    "count": "lesion count (GT)",
    "volume": "TMTV (GT, mL)",
    "activity": "SUVmax (GT)",
    "spread": "Dmax (GT, cm)",
}
BIOMARKER_TITLES = {
    "suvmax": "SUVmax", "suvmean": "SUVmean", "tmtv_ml": "TMTV (mL)", "tla": "TLA (SUV·mL)",
    "lesion_count": "lesion count", "dmax_cm": "Dmax (cm)",
}


# ------------------------------------------------------------------------------------------ folder
def check_out_folder(out: Path) -> None:
    """``out`` may be created, or replaced if it is an earlier report (it holds :data:`MARKER`) or empty."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LossbenchError(f"--out {out} is a file; choose a folder name")
    if (out / MARKER).is_file() or not any(out.iterdir()):
        return
    raise LossbenchError(f"--out {out} exists and is not a lossbench report folder; choose another folder "
                         "(an earlier report folder would be replaced)")


def atomic_folder(out: Path) -> contextlib.AbstractContextManager[Path]:
    """A temporary sibling of ``out`` that replaces it in one rename on success (:func:`lossbench.fsio.atomic_folder`)."""
    from lossbench.fsio import atomic_folder as _atomic_folder

    return _atomic_folder(Path(out), check=check_out_folder)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _colors(losses: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {loss: cmap(i % 10) for i, loss in enumerate(losses)}


def metric_plot(comp: Comparison, network: str, metric: str) -> bytes:
    """Box plot with the units as points, by loss, in each stratum level (one panel per stratum)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from lossbench.compare.stats import ordered_levels

    units = comp.units[comp.units["network"] == network]
    losses = comp.losses[network]
    colors = _colors(losses)
    panels = [(ALL, None), *STRATA.items()]
    fig = Figure(figsize=(3.0 * len(panels) + 0.5, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    rng = np.random.default_rng(0)
    k = len(losses)
    width = 0.8 / k
    for ax, (stratum, column) in zip(axes, panels, strict=True):
        if column is None:
            levels = [ALL]
        else:
            levels = ordered_levels(units[column].dropna(), comp.level_order.get(column))
        parts = [units if column is None else units[units[column] == level] for level in levels]
        flagged = _flagged_levels(comp, network, metric, stratum)
        labels = [f"{level}{' †' if level in flagged else ''}\nn={part['case_id'].nunique()}"
                  for level, part in zip(levels, parts, strict=True)]
        for j, loss in enumerate(losses):  # one boxplot and one scatter call per loss: all levels at once
            data, positions = [], []
            for i, part in enumerate(parts):
                vals = part.loc[part["loss"] == loss, metric].to_numpy(dtype=np.float64)
                vals = vals[~np.isnan(vals)]
                if vals.size:
                    data.append(vals)
                    positions.append(i + (j - (k - 1) / 2) * width)
            if not data:
                continue
            box = ax.boxplot(data, positions=positions, widths=width * 0.85, showfliers=False,
                             patch_artist=True, manage_ticks=False)
            for patch in box["boxes"]:
                patch.set(facecolor=(*colors[loss][:3], 0.25), edgecolor=colors[loss])
            for item in (*box["medians"], *box["whiskers"], *box["caps"]):
                item.set(color=colors[loss])
            xs = np.concatenate([np.full(v.size, pos) for v, pos in zip(data, positions, strict=True)])
            xs = xs + rng.uniform(-width * 0.3, width * 0.3, xs.size)
            ax.scatter(xs, np.concatenate(data), s=7, color=colors[loss], alpha=0.6, linewidths=0)
        ax.set_xticks(range(len(levels)), labels, fontsize=7)
        ax.set_title(STRATUM_TITLES.get(stratum, stratum), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(metric)
    handles = [Patch(facecolor=(*colors[loss][:3], 0.4), edgecolor=colors[loss], label=loss)
               for loss in losses]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(f"{network}: {metric} by loss and stratum (one point per {_unit_name(comp)}; "
                 f"† level not testable, see tests.csv)", fontsize=10)
    return _png(fig)


def _flagged_levels(comp: Comparison, network: str, metric: str, stratum: str) -> set[Any]:
    """Levels whose primary test of this metric was flagged (too few cases, or unreachable)."""
    t = comp.tests
    rows = t[(t["network"] == network) & (t["metric"] == metric) & (t["stratum"] == stratum)
             & (t["test"] == "twoway") & (t["flag"] != "")]
    return set(rows["level"])


def family_forest_plot(comp: Comparison, family: str) -> bytes | None:
    """One forest plot per controlled family: candidate − baseline of the primary test, every network and
    level, with its simultaneous (Bonferroni over the family) CI; flagged rows marked †, without a CI."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from lossbench.compare.families import higher_is_better

    t = comp.tests
    rows = t[(t["family"] == family) & (t["test"] == "twoway")]
    if rows.empty:
        return None
    n = len(rows)
    fig = Figure(figsize=(7.5, 1.3 + 0.24 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    mid = rows["estimate"].to_numpy(dtype=np.float64)
    low = rows["sci_low"].to_numpy(dtype=np.float64)
    high = rows["sci_high"].to_numpy(dtype=np.float64)
    sig = rows["significant"].to_numpy(dtype=bool)
    flagged = (rows["flag"] != "").to_numpy()
    has_ci = ~(np.isnan(low) | np.isnan(high))
    err = np.vstack([np.where(has_ci, mid - low, 0.0), np.where(has_ci, high - mid, 0.0)])
    ax.errorbar(mid[has_ci], y[has_ci], xerr=err[:, has_ci], fmt="none", ecolor="0.4", elinewidth=1, capsize=2)
    ok = ~flagged
    ax.scatter(mid[sig & ok], y[sig & ok], color="C3", zorder=3, s=24, label="significant (family-wise)")
    ax.scatter(mid[~sig & ok], y[~sig & ok], facecolors="white", edgecolors="0.2", zorder=3, s=24,
               label="not significant")
    if flagged.any():
        ax.scatter(mid[flagged], y[flagged], marker="x", color="0.5", zorder=3, s=24, label="† not testable")
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    labels = []
    for r in rows.itertuples():
        level = "" if r.stratum == ALL else f" {r.stratum} {r.level}"
        labels.append(f"{r.network}{level}: {r.loss_a} − {r.loss_b} (n={r.n}){' †' if r.flag else ''}")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    metric = comp.options["primary"]
    direction = higher_is_better(metric)
    side = {True: "right of 0: candidate better", False: "left of 0: candidate better"}.get(direction, "")
    m = int(rows["p_adjusted"].notna().sum())
    level = 100 * (1 - comp.options["alpha"])
    ax.set_xlabel(f"mean paired difference of {metric}, candidate − baseline ({side}); {level:g} % simultaneous "
                  f"CI (Bonferroni over {m})", fontsize=8)
    ax.set_title(f"family {family}: primary test (runs and cases random)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def cd_diagram(ranking: Any, alpha: float) -> bytes:
    """Critical-difference diagram (Demšar 2006): mean Friedman ranks, bars join losses within the CD."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    k = len(ranking.losses)
    order = np.argsort(ranking.mean_ranks)
    fig = Figure(figsize=(6.5, 1.6 + 0.28 * k), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-k - 1, 1.5)
    ax.hlines(0, 1, k, color="k", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="k", lw=1)
        ax.text(r, 0.3, str(r), ha="center", fontsize=8)
    for pos, j in enumerate(order):
        rank = ranking.mean_ranks[j]
        ax.vlines(rank, -(pos + 1), 0, color="C0", lw=0.8)
        ax.text(rank + 0.05, -(pos + 1), f"{ranking.losses[j]} ({rank:.2f})", va="center", fontsize=8)
    # groups of losses that are not significantly different (pairwise post-hoc p > alpha)
    depth = -(k + 0.5)
    sorted_ranks = ranking.mean_ranks[order]
    for i in range(k):
        j = i
        while j + 1 < k and ranking.p[order[i], order[j + 1]] > alpha:
            j += 1
        if j > i and not (i > 0 and ranking.p[order[i - 1], order[j]] > alpha):
            ax.hlines(depth, sorted_ranks[i] - 0.03, sorted_ranks[j] + 0.03, color="C3", lw=3)
            depth -= 0.25
    ax.hlines(1.0, 1, 1 + ranking.cd, color="C3", lw=2)
    ax.text(1 + ranking.cd / 2, 1.15, f"CD = {ranking.cd:.2f}", ha="center", fontsize=8)
    ax.axis("off")
    ax.set_title(f"{ranking.network}: mean rank (1 = best) over {ranking.n} cases; red bars: no significant "
                 f"{ranking.posthoc} difference", fontsize=9)
    return _png(fig)


def rank_stability_plot(ranking: Any) -> bytes | None:
    """Stacked frequencies of each loss's bootstrap rank (cases and runs resampled)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    if not ranking.stability:
        return None
    losses = list(ranking.stability)
    k = len(losses)
    counts = np.array([ranking.stability[x] for x in losses], dtype=np.float64)
    freq = counts / counts.sum(axis=1, keepdims=True)
    fig = Figure(figsize=(6.0, 1.2 + 0.35 * k), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(k)
    cmap = matplotlib.colormaps["viridis"]
    for r in range(k):
        ax.barh(losses, freq[:, r], left=left, color=cmap(r / max(k - 1, 1)), label=f"rank {r + 1}")
        left += freq[:, r]
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of {int(counts[0].sum())} bootstrap samples (cases and runs resampled)", fontsize=8)
    ax.legend(fontsize=7, ncols=min(k, 5), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.set_title(f"{ranking.network}: bootstrap rank of each loss on the primary metric", fontsize=9)
    return _png(fig)


# ------------------------------------------------------------------------------------------ text
def _unit_name(comp: Comparison) -> str:
    return "case" if comp.options["seeds"] == "mean" else "case × fold × seed"


def _stratum_label(stratum: str, level: Any) -> str:
    return ALL if stratum == ALL else f"{stratum} {level}"


def methods_text(comp: Comparison) -> list[str]:
    """The methods, one paragraph per item, as plain text (used by both report formats)."""
    o = comp.options
    correction = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini–Hochberg (FDR)"}[o["correction"]]
    flagged = int((comp.tests["flag"] != "").sum())
    level = f"{100 * (1 - o['alpha']):g} %"
    secondary_unit = ("the per-case values averaged over each loss's runs (one pair per test case)"
                      if o["seeds"] == "mean" else
                      "one pair per (case, fold, seed) — pseudo-replication: the pairs of one case are not "
                      "independent, so these p-values are optimistic")
    baseline = (f"{o['baseline']} (given with --baseline)" if o.get("baseline_given")
                else f"{o['baseline']} (default: l1dfl when compared, else the first loss by name)")
    out = [
        f"Question and estimand. Does a loss beat the baseline {baseline} for new patients and new training "
        f"runs? The estimand is the mean paired difference candidate − baseline of the per-case metric, over "
        f"training runs (folds × seeds) and test cases, both treated as random samples. Networks are never mixed.",
        "Primary test (default): two-way random-effects t-test on the runs × cases table (lossbench.compare.stats."
        "twoway_pair). Model: value = loss effect + run effect + case effect + case × loss interaction + residual. "
        "When both losses have the same (fold, seed) runs, run i of the candidate is paired with run i of the "
        "baseline and the differences D (runs × cases) give Var(mean D) = σ²_run/R + σ²_case/C + σ²_res/(RC), "
        "estimated from the ANOVA mean squares (MS_cases + max(MS_runs − MS_res, 0))/(RC); otherwise each loss's "
        "run variance comes from its own runs × cases table. Degrees of freedom by Satterthwaite (never below the "
        "run or case df). Why this test: it has both sources of variance in its denominator, so seed-to-seed "
        "training variance is not mistaken for a loss effect (a per-case test on seed-averaged values treats the "
        "runs as fixed), and a case × loss interaction is not either (a test over runs alone treats the cases as "
        "fixed); the method-of-moments fit is the REML fit of the crossed mixed model for complete tables and "
        "cannot fail to converge, and its small-sample t reference is better calibrated with 2–10 runs than a "
        "bootstrap over so few runs (whose variance is biased low by (R − 1)/R). The effect is the mean difference "
        f"with its {level} t CI. Cases without a value in every run of both losses are left out of that test.",
        f"Secondary analysis (named, never confirmatory): Wilcoxon signed-rank test on {secondary_unit}; exact "
        "conditional p-value with ties and zeros dropped (shift algorithm over all 2^n sign flips, up to 500 "
        "non-zero differences; normal approximation above), the Hodges–Lehmann pseudo-median as its effect with "
        f"the exact Wilcoxon-inverted {level} CI, and the matched-pairs rank-biserial correlation. It holds the "
        "runs fixed and answers 'do these runs differ on these cases'.",
        f"Pre-specified families (one correction each, {correction}, α = {o['alpha']:g}). Confirmatory: every loss "
        f"against the baseline on the primary metric {o['primary']}, all cases, every network. Secondary: one "
        "family per stratum dimension (lesion count, TMTV, SUVmax, Dmax; every level × network × candidate), each "
        "corrected on its own (a declared per-family correction: the error rate is controlled within each "
        "dimension, at most 4α across the four). Omnibus: Friedman on the primary metric, all cases, one test per "
        f"network. Post-hoc: {o['posthoc'].capitalize()} all-pairs test, interpreted only when its network's "
        "omnibus test is significant. Everything else (other metrics, other pairs, the absolute biomarker "
        "errors, other Friedman tests) is exploratory: corrected as one family per analysis, labelled "
        "exploratory, hypothesis-generating only. The primary and the secondary analyses are corrected separately.",
        f"Discreteness (Tarone 1990). Within each family, a test whose smallest attainable p-value (Wilcoxon: "
        f"2/2^n with n non-zero differences; Friedman: with all untied cases in full agreement) exceeds α/K, K the "
        f"smallest number with at most K tests able to reach α/K, is flagged and left out of the correction; "
        f"tests with fewer than {o['min_pairs']} cases are flagged too ({flagged} rows flagged, † in the plots).",
        "Simultaneous intervals. The forest plot of each controlled pair family shows the primary estimate with "
        "Bonferroni-simultaneous CIs (each at 1 − α/m, m tests in the family): all intervals cover their true "
        "differences together with probability ≥ 1 − α. A Holm rejection can sit beside a simultaneous CI that "
        "touches 0.",
        "Rankings. Friedman's test (scipy, chi-square with tie correction) on the run-averaged per-case values, "
        f"{o['posthoc'].capitalize()}'s post-hoc test (Nemenyi: studentized range, simultaneous; Conover: t with "
        "Holm) and a critical-difference diagram (Demšar 2006; CD = q_α/√2 · √(k(k+1)/(6N))); the rank stability "
        f"plot shows each loss's rank over {min(o['n_boot'], 1000)} bootstrap samples that resample the cases and, "
        "per loss, its runs (both random).",
        f"Missing values: --missing {o['missing']}: "
        + ("a missing value is left out pairwise (the primary test uses the cases complete in every run)."
           if o["missing"] == "drop" else
           "every missing value (NaN in a table or a case absent from a run) becomes the worst value of the metric "
           "in its network (0 for Dice, F1, sensitivity, precision; the largest observed FP/FN count or volume)."),
        f"Agreement. Predicted against GT biomarkers per network × loss, one pair per {_unit_name(comp)}, "
        f"{o['ba_scale']} scale: Lin's CCC (1/n moments, Fisher-z CI); Bland–Altman bias and 95 % limits of "
        "agreement with their CIs (Bland & Altman 1999)"
        + (" on ln(pred) − ln(GT), shown as ratios pred/GT" if o["ba_scale"] == "log" else "")
        + "; TOST equivalence (two one-sided paired t-tests), margin "
        + (f"±ln(1 + {o['margin']:g}) on the log ratio" if o["ba_scale"] == "log"
           else f"±{100 * o['margin']:g} % of the mean GT value")
        + f", p-values {correction}-corrected over all biomarkers × losses × networks; CP at the margin and TDI(0.90) "
        "under normality (Lin 2000) with a bootstrap CI. Empty GT: (0, 0) pairs (nothing to find, nothing found) "
        "are left out and counted; pairs with one 0 are kept on the linear scale, left out (and counted) on the log "
        "scale. The absolute biomarker errors |pred − GT| of the losses are compared per case like the metrics "
        "(abserr_* rows, exploratory).",
    ]
    if comp.single_run:
        out.insert(2, f"One training run per loss (network {', '.join(comp.single_run)}): training variance cannot be "
                   "assessed. The primary test then reduces to a paired t-test over cases, and its verdicts hold for "
                   "these particular runs only.")
    return out


def _direction_word(metric: str) -> str:
    from lossbench.compare.families import higher_is_better

    return {True: "higher is better", False: "lower is better"}.get(higher_is_better(metric), "no direction")


def headline(comp: Comparison) -> list[str]:
    """Every significant confirmatory and omnibus result, one line each, with the direction of better."""
    t = comp.tests
    o = comp.options
    lines = []
    conf = t[(t["family"] == "confirmatory") & (t["analysis"] == "primary")]
    sig = conf[conf["significant"]]
    lines.append(f"Confirmatory family ({len(conf)} tests: each loss against {o['baseline']} on {o['primary']}, "
                 f"{_direction_word(o['primary'])}; all cases; runs and cases random; {o['correction']}): "
                 f"{len(sig)} significant.")
    for r in sig.itertuples():
        lines.append(f"{r.network}: {r.loss_a} − {r.loss_b} = {fmt(r.estimate)} {r.metric} "
                     f"[{fmt(r.sci_low)}, {fmt(r.sci_high)}] simultaneous CI, p adj. {fmt_p(r.p_adjusted)}, "
                     f"n = {r.n} cases × {int(r.n_runs_a)}/{int(r.n_runs_b)} runs — {r.better or 'no'} better.")
    omni = t[t["family"] == "omnibus"]
    for r in omni[omni["significant"]].itertuples():
        post = t[(t["family"] == "posthoc") & (t["network"] == r.network) & t["significant"]]
        pairs = "; ".join(f"{p.loss_a} vs {p.loss_b} (mean ranks {fmt(p.mean_a)} vs {fmt(p.mean_b)})"
                          for p in post.itertuples()) or "no pair significant"
        lines.append(f"Omnibus: Friedman on {r.metric} in {r.network} significant (χ² = {fmt(r.statistic)}, n = {r.n}, "
                     f"p adj. {fmt_p(r.p_adjusted)}); post-hoc {o['posthoc']}: {pairs}.")
    if not omni.empty and not omni["significant"].any():
        lines.append(f"Omnibus: no Friedman test on {o['primary']} significant.")
    strata = t[t["family"].str.startswith("stratum:") & (t["analysis"] == "primary") & t["significant"]]
    if len(strata):
        lines.append(f"Strata (secondary families, per-dimension correction): {len(strata)} significant — "
                     + "; ".join(f"{r.network} {r.stratum} {r.level}: {r.loss_a} − {r.loss_b} = {fmt(r.estimate)} "
                                 f"({r.better or 'no'} better)" for r in strata.itertuples()) + ".")
    flagged = t[t["family"].str.startswith("stratum:") & (t["analysis"] == "primary") & (t["flag"] != "")]
    if len(flagged):
        lines.append(f"† {len(flagged)} stratum test(s) not testable (too few cases): "
                     + ", ".join(sorted({f"{r.stratum} {r.level}" for r in flagged.itertuples()})) + ".")
    return lines


def _cell_summary(s: pd.Series, html_mode: bool) -> str:
    sep = "<br>" if html_mode else "; "
    return f"{fmt(s['mean'])} ± {fmt(s['sd'])}{sep}{fmt(s['median'])} [{fmt(s['q1'])}, {fmt(s['q3'])}] (n={s['n']})"


def _summary_rows(comp: Comparison, network: str, html_mode: bool) -> tuple[list[str], list[list[str]]]:
    s = comp.summary
    s = s[(s["network"] == network) & (s["stratum"] == ALL)]
    n_runs = comp.runs[comp.runs["network"] == network].groupby("loss")["run_id"].nunique()
    headers = ["loss", "runs", "n", *[f"{m} ({_direction_word(m)})" for m in comp.metrics]]
    rows = []
    for loss in comp.losses[network]:
        part = s[s["loss"] == loss].set_index("metric")
        n = int(part["n"].max()) if len(part) else 0
        rows.append([loss, str(int(n_runs.get(loss, 0))), str(n),
                     *[_cell_summary(part.loc[m], html_mode) if m in part.index else "–" for m in comp.metrics]])
    return headers, rows


def _pair_rows(comp: Comparison, network: str, families: Sequence[str] | None, only_sig: bool
               ) -> tuple[list[str], list[list[str]]]:
    t = comp.tests
    t = t[(t["network"] == network) & t["test"].isin(["twoway", "wilcoxon"])]
    if families is not None:
        t = t[t["family"].isin(families)]
    if only_sig:
        t = t[t["significant"]]
    headers = ["family", "analysis", "stratum", "metric", "candidate − baseline", "n", "runs", "estimate [CI]",
               "simultaneous CI", "better", "p", "p adj.", "significant", "flag"]
    rows = [[r.family, "primary (two-way)" if r.test == "twoway" else "secondary (Wilcoxon, HL)",
             _stratum_label(r.stratum, r.level), r.metric, f"{r.loss_a} − {r.loss_b}", str(r.n),
             f"{int(r.n_runs_a)}/{int(r.n_runs_b)}", f"{fmt(r.estimate)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]",
             f"[{fmt(r.sci_low)}, {fmt(r.sci_high)}]" if r.sci_low == r.sci_low else "", r.better,
             fmt_p(r.p), fmt_p(r.p_adjusted), fmt(bool(r.significant)), r.flag] for r in t.itertuples()]
    return headers, rows


def _sig_rows(comp: Comparison, network: str) -> tuple[list[str], list[list[str]]]:
    """Significant results of the controlled families (confirmatory, strata), both analyses."""
    fams = ["confirmatory", *[f for f in comp.tests["family"].unique() if str(f).startswith("stratum:")]]
    return _pair_rows(comp, network, fams, only_sig=True)


def _friedman_rows(comp: Comparison, network: str, only_all: bool) -> tuple[list[str], list[list[str]]]:
    t = comp.tests
    t = t[(t["network"] == network) & t["test"].isin(["friedman", "nemenyi", "conover"])]
    if only_all:
        t = t[t["family"].isin(["omnibus", "posthoc"]) | t["significant"]]
    headers = ["family", "test", "stratum", "metric", "losses", "n", "statistic", "Kendall's W", "p", "p adj.",
               "significant", "flag"]
    rows = [[r.family, r.test, _stratum_label(r.stratum, r.level), r.metric,
             r.loss_a if r.test == "friedman" else f"{r.loss_a} vs {r.loss_b}", str(r.n), fmt(r.statistic),
             fmt(r.kendall_w), fmt_p(r.p), fmt_p(r.p_adjusted), fmt(bool(r.significant)), r.flag]
            for r in t.itertuples()]
    return headers, rows


def _agreement_rows(comp: Comparison, network: str) -> tuple[list[str], list[list[str]]]:
    import math as _math

    a = comp.agreement
    log = comp.options.get("ba_scale") == "log"
    headers = ["loss", "biomarker", "n", "(0,0) left out", "GT mean", "pred. mean", "CCC [CI]",
               "bias (ratio)" if log else "bias", "95 % LoA [CIs]", "margin ±", "TOST p adj.", "equivalent",
               "CP(margin)", "TDI 0.90 [CI]", "flag"]
    if a.empty:
        return headers, []
    a = a[a["network"] == network]

    def tr(v: float) -> str:
        return fmt(_math.exp(v)) if log and v == v else fmt(v)

    rows = [[r.loss, BIOMARKER_TITLES.get(r.biomarker, r.biomarker), str(r.n),
             f"{r.n_empty_both}" + (f" (+{r.n_one_zero} one 0)" if log and r.n_one_zero else ""),
             fmt(r.gt_mean), fmt(r.pred_mean), f"{fmt(r.ccc)} [{fmt(r.ccc_low)}, {fmt(r.ccc_high)}]", tr(r.ba_bias),
             f"{tr(r.ba_loa_low)} [{tr(r.loa_low_ci_low)}, {tr(r.loa_low_ci_high)}] to {tr(r.ba_loa_high)} "
             f"[{tr(r.loa_high_ci_low)}, {tr(r.loa_high_ci_high)}]", tr(r.margin) if log else fmt(r.margin),
             fmt_p(r.tost_p_adjusted), fmt(bool(r.equivalent)), fmt(r.cp_margin),
             f"{tr(r.tdi_90)} [{tr(r.tdi_90_ci_low)}, {tr(r.tdi_90_ci_high)}]", r.flag] for r in a.itertuples()]
    return headers, rows


def _runs_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in ("run_id", "name", "loss", "network", "fold", "seed", "preset") if c in comp.runs.columns]
    return cols, [[fmt(v) for v in row] for row in comp.runs[cols].itertuples(index=False)]


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], raw: bool = False) -> str:
    def cell(text: str) -> str:
        return str(text) if raw else html.escape(str(text))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tests_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["network", "family", "test", "stratum", "metric", "A", "B", "n", "method", "statistic", "p", "p adj.",
               "significant", "estimate [CI]", "better", "flag"]
    rows = [[r.network, r.family, r.test, _stratum_label(r.stratum, r.level), r.metric, r.loss_a, r.loss_b, str(r.n),
             r.method, fmt(r.statistic), fmt_p(r.p), fmt_p(r.p_adjusted), fmt(bool(r.significant)),
             f"{fmt(r.estimate)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if r.test in ("twoway", "wilcoxon") else "",
             r.better, r.flag] for r in comp.tests.itertuples()]
    return headers, rows


def public_uri(uri: str) -> str:
    """A tracking URI without the user's absolute paths: ``sqlite:///home/me/x/mlflow.db`` -> ``sqlite:///…/mlflow.db``."""
    import re

    if uri.startswith(("sqlite:///", "file://")):
        scheme, _, rest = uri.partition("://")
        name = rest.rstrip("/").rsplit("/", 1)[-1]
        return f"{scheme}://…/{name}"
    if uri.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", uri):
        return "…/" + re.split(r"[\\/]", uri.rstrip("/\\"))[-1]
    return re.sub(r"//[^/@]*@", "//", uri)  # no credentials of an http URI either


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1500px;
color:#222;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.meta td{text-align:left}.note{color:#8a4b00}img{max-width:100%;display:block;margin:.4rem 0 1.2rem}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
.cases{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.8rem}.cases h4{width:100%;margin:.6rem 0 0}
.cases figure{margin:0}.cases img{max-height:420px;width:auto;margin:0}.cases figcaption{text-align:center}
"""


def write_report(comp: Comparison, folder: Path, context: dict[str, Any],
                 pictures: Mapping[str, Sequence[tuple[str, Mapping[str, bytes]]]] | None = None) -> list[Path]:
    """Write every file of the report into ``folder`` (which exists); returns the files written.

    ``pictures``: per network, a few test cases with one PET MIP per loss
    (:func:`lossbench.compare.loader.load_pictures`), shown side by side.

    ``context``: experiment, tracking_uri, selection (text), comparison_run_id, created (ISO time),
    version. The tracking URI is shown without the user's absolute path (:func:`public_uri`).
    """
    folder = Path(folder)
    plots = folder / "plots"
    plots.mkdir()
    context = {**context, "tracking_uri": public_uri(str(context.get("tracking_uri", "")))}
    comp.tests.to_csv(folder / "tests.csv", index=False)
    comp.agreement.to_csv(folder / "agreement.csv", index=False)
    comp.summary.to_csv(folder / "summary.csv", index=False)
    comp.runs.to_csv(folder / "runs.csv", index=False)

    family_images: list[tuple[str, str, bytes]] = []
    families = [f for f in ("confirmatory", *(f"stratum:{s}" for s in STRATA)) if (comp.tests["family"] == f).any()]
    for family in families:
        png = family_forest_plot(comp, family)
        if png is not None:
            family_images.append((f"plots/forest-{_safe(family.replace(':', '-'))}.png",
                                  f"forest plot, family {family}", png))
    images: dict[str, list[tuple[str, str, bytes]]] = {}
    rankings = {r.network: r for r in comp.rankings}
    for network in comp.losses:
        items = []
        for metric in comp.metrics:
            safe = _safe(f"{network}-{metric}")
            items.append((f"plots/{safe}-strata.png", f"{network}: {metric} by loss and stratum",
                          metric_plot(comp, network, metric)))
        if network in rankings:
            items.append((f"plots/{_safe(network)}-cd.png", f"{network}: critical-difference diagram",
                          cd_diagram(rankings[network], comp.options["alpha"])))
            stab = rank_stability_plot(rankings[network])
            if stab is not None:
                items.append((f"plots/{_safe(network)}-rank-stability.png", f"{network}: bootstrap rank stability",
                              stab))
        images[network] = items
    for rel, _, png in [*family_images, *(i for items in images.values() for i in items)]:
        (folder / rel).write_bytes(png)
    # test cases side by side: {network: [(case, [(loss, rel path)])]}
    side: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {}
    for network, rows in (pictures or {}).items():
        for case_id, by_loss in rows:
            cells = []
            for loss in sorted(by_loss):
                rel = f"plots/case-{_safe(network)}-{_safe(case_id)}-{_safe(loss)}.png"
                (folder / rel).write_bytes(by_loss[loss])
                cells.append((loss, rel))
            side.setdefault(network, []).append((case_id, cells))
    pictures_note = ("PET maximum-intensity projections (coronal) of a few test cases spanning the lesion-count and "
                     "burden strata, one run per loss (same fold and seed): ground truth detected (green), missed "
                     "(blue), false-positive predictions (red), other predicted voxels (orange).")

    title = f"lossbench comparison: experiment {context['experiment']}"
    meta = [
        ("experiment", str(context["experiment"])),
        ("tracking store", str(context["tracking_uri"])),
        ("runs compared", f"{len(comp.runs)} ({context['selection']})"),
        ("MLflow comparison run", str(context.get("comparison_run_id") or "–")),
        ("created", str(context["created"])),
        ("lossbench", str(context.get("version", ""))),
        ("primary metric", f"{comp.options['primary']} ({_direction_word(comp.options['primary'])})"),
        ("baseline", str(comp.options["baseline"])),
        ("metrics", ", ".join(f"{m} ({_direction_word(m)})" for m in comp.metrics)),
        ("options", ", ".join(f"{k}={v}" for k, v in comp.options.items() if k not in ("metrics", "unit"))),
    ]
    t = comp.tests
    tested = int(t["p_adjusted"].notna().sum())
    n_sig = int(t.loc[t["family"].isin(["confirmatory", "omnibus", "posthoc"]), "significant"].sum())
    counts = (f"{tested} tests in families, {int((t['flag'] != '').sum())} flagged (not testable); "
              f"{int(t.loc[t['family'] == 'exploratory', 'significant'].sum())} exploratory results below the "
              "exploratory threshold (hypothesis-generating only).")
    head = headline(comp)

    # ---- markdown
    md = [f"# {title}", "", _md_table(["", ""], meta), "", "## Headline", ""]
    md += [f"- **{line}**" if i == 0 else f"- {line}" for i, line in enumerate(head)] + ["", counts, ""]
    for rel, alt, _ in family_images:
        md.append(f"![{alt}]({rel})")
    md += ["", "## Methods", ""] + [f"- {p}" for p in methods_text(comp)]
    if comp.notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in comp.notes]
    for network in comp.losses:
        md += ["", f"## Network {network}", "", "### Per-case values, all cases (mean ± SD; median [IQR]; n)", ""]
        md.append(_md_table(*_summary_rows(comp, network, html_mode=False)))
        if len(comp.losses[network]) >= 2:
            headers, rows = _sig_rows(comp, network)
            md += ["", f"### Significant paired differences in the controlled families ({len(rows)})", ""]
            md.append(_md_table(headers, rows) if rows else "None after correction.")
            headers, rows = _friedman_rows(comp, network, only_all=True)
            if rows:
                md += ["", "### Omnibus (Friedman) and post-hoc tests", "", _md_table(headers, rows)]
            headers, rows = _pair_rows(comp, network, ["exploratory"], only_sig=True)
            if rows:
                md += ["", f"### Exploratory (hypothesis-generating, not claims): {len(rows)} below threshold", "",
                       _md_table(headers, rows)]
        md += ["", "### Plots", ""] + [f"![{alt}]({rel})" for rel, alt, _ in images[network]]
        if side.get(network):
            losses = [loss for loss, _ in side[network][0][1]]
            md += ["", "### Test cases side by side", "", pictures_note, "",
                   _md_table(["case", *losses], [[case, *(f"![{case} {loss}]({rel})" for loss, rel in cells)]
                                                 for case, cells in side[network]])]
        headers, rows = _agreement_rows(comp, network)
        if rows:
            md += ["", f"### Agreement of predicted with GT biomarkers ({comp.options['ba_scale']} scale)", "",
                   _md_table(headers, rows)]
    md += ["", "## Files", "", "- every test, with family and flags: [tests.csv](tests.csv)",
           "- agreement: [agreement.csv](agreement.csv)", "- per-stratum summaries: [summary.csv](summary.csv)",
           "- runs compared: [runs.csv](runs.csv)", ""]
    (folder / "report.md").write_text("\n".join(md), encoding="utf-8")

    # ---- html
    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'

    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         '<table class="meta">' + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                          for k, v in meta) + "</table>",
         '<h2>Headline</h2><ul class="headline">']
    h += [f"<li>{'<strong>' if i == 0 else ''}{html.escape(line)}{'</strong>' if i == 0 else ''}</li>"
          for i, line in enumerate(head)]
    h.append(f"</ul><p>{html.escape(counts)}</p>")
    h += [img(png, alt) for _, alt, png in family_images]
    h.append("<h2>Methods</h2><ul>")
    h += [f"<li>{html.escape(p)}</li>" for p in methods_text(comp)]
    h.append("</ul>")
    if comp.notes:
        h.append("<h2>Notes</h2><ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in comp.notes)
                 + "</ul>")
    for network in comp.losses:
        h.append(f"<h2>Network {html.escape(network)}</h2>")
        h.append("<h3>Per-case values, all cases (mean ± SD, median [IQR], n)</h3>")
        headers, rows = _summary_rows(comp, network, html_mode=True)
        esc = [[html.escape(c).replace("&lt;br&gt;", "<br>") for c in row] for row in rows]
        h.append(_html_table(headers, esc, raw=True))
        if len(comp.losses[network]) >= 2:
            headers, rows = _sig_rows(comp, network)
            h.append(f"<h3>Significant paired differences in the controlled families ({len(rows)})</h3>")
            h.append(_html_table(headers, rows) if rows else "<p>None after correction.</p>")
            headers, rows = _friedman_rows(comp, network, only_all=False)
            if rows:
                h.append(f"<details><summary>Friedman and post-hoc tests ({len(rows)})</summary>"
                         f"{_html_table(headers, rows)}</details>")
            headers, rows = _pair_rows(comp, network, ["exploratory"], only_sig=True)
            if rows:
                h.append(f"<details><summary>Exploratory, hypothesis-generating only ({len(rows)} below threshold)"
                         f"</summary>{_html_table(headers, rows)}</details>")
        h += [img(png, alt) for _, alt, png in images[network]]
        if side.get(network):
            h.append(f"<h3>Test cases side by side</h3><p>{html.escape(pictures_note)}</p>")
            for case, cells in side[network]:
                h.append(f'<div class="cases"><h4>{html.escape(case)}</h4>' + "".join(
                    f"<figure>{img((folder / rel).read_bytes(), f'{case} {loss}')}<figcaption>{html.escape(loss)}"
                    "</figcaption></figure>" for loss, rel in cells) + "</div>")
        headers, rows = _agreement_rows(comp, network)
        if rows:
            h.append(f"<h3>Agreement of predicted with GT biomarkers ({comp.options['ba_scale']} scale)</h3>")
            h.append(_html_table(headers, rows))
    headers, rows = _tests_rows(comp)
    h.append(f"<h2>All tests</h2><details><summary>{len(rows)} rows (tests.csv)</summary>"
             f"{_html_table(headers, rows)}</details>")
    headers, rows = _runs_rows(comp)
    h.append(f"<h2>Runs compared</h2><details><summary>{len(rows)} runs (runs.csv)</summary>"
             f"{_html_table(headers, rows)}</details>")
    h.append("</body></html>")
    (folder / "report.html").write_text("\n".join(h), encoding="utf-8")

    marker = {"format": "lossbench-report/2", **dict(context.items()), "options": comp.options,
              "n_runs": len(comp.runs), "n_tests": tested, "n_significant": n_sig}
    (folder / MARKER).write_text(json.dumps(marker, indent=2, default=_json_default), encoding="utf-8")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "plot"

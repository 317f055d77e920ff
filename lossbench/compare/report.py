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
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out``; on success it replaces ``out`` in one rename."""
    out = Path(out)
    check_out_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        check_out_folder(out)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ plots
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
        labels = [f"{level}\nn={part['case_id'].nunique()}" for level, part in zip(levels, parts, strict=True)]
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
    fig.suptitle(f"{network}: {metric} by loss and stratum (one point per {_unit_name(comp)})", fontsize=10)
    return _png(fig)


def forest_plot(comp: Comparison, network: str, metric: str) -> bytes | None:
    """Median paired differences with their bootstrap CIs, every tested comparison of one metric."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    t = comp.tests
    rows = t[(t["network"] == network) & (t["metric"] == metric) & (t["test"] == "wilcoxon") & t["p"].notna()]
    if rows.empty:
        return None
    n = len(rows)
    fig = Figure(figsize=(7.0, 1.0 + 0.22 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    mid = rows["median_diff"].to_numpy(dtype=np.float64)
    low = rows["ci_low"].to_numpy(dtype=np.float64)
    high = rows["ci_high"].to_numpy(dtype=np.float64)
    sig = rows["significant"].to_numpy(dtype=bool)
    has_ci = ~(np.isnan(low) | np.isnan(high))
    err = np.vstack([np.where(has_ci, mid - low, 0.0), np.where(has_ci, high - mid, 0.0)])
    ax.errorbar(mid, y, xerr=err, fmt="none", ecolor="0.4", elinewidth=1, capsize=2)
    ax.scatter(mid[sig], y[sig], color="C3", zorder=3, s=22, label="significant after correction")
    ax.scatter(mid[~sig], y[~sig], facecolors="white", edgecolors="0.2", zorder=3, s=22, label="not significant")
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    labels = [f"{_stratum_label(r.stratum, r.level)}: {r.loss_a} − {r.loss_b}" for r in rows.itertuples()]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    level = 100 * (1 - comp.options["alpha"])
    ax.set_xlabel(f"median paired difference of {metric} (A − B), {level:g} % bootstrap CI", fontsize=8)
    ax.set_title(f"{network}: {metric}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
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
    tested = int(comp.tests["p"].notna().sum())
    flagged = int((comp.tests["flag"] != "").sum())
    if o["seeds"] == "mean":
        pairing = ("Each loss's per-case value is the mean over all its runs of that network (folds × seeds); "
                   "loss A and loss B are paired on the test cases (case_id) that have a value for both.")
    else:
        pairing = ("Every run is kept: run (fold f, seed s) of loss A is paired with run (fold f, seed s) of "
                   "loss B on each test case, i.e. pairs are keyed by (case_id, fold, seed); pairs of one case "
                   "are not independent, so p-values are optimistic.")
    comparisons = (f"each loss against the baseline {o['baseline']}" if o["baseline"]
                   else "every pair of losses")
    return [
        f"Pairing. Comparisons never cross networks. {pairing} Strata ({o['strata']} edges) are computed from "
        "the ground truth of each case: lesion count, TMTV, SUVmax and Dmax; every stratum level is tested "
        "separately, and all cases together as 'all'.",
        f"Tests. Wilcoxon signed-rank test (scipy.stats.wilcoxon, two-sided, zero_method='wilcox': zero "
        f"differences dropped) of {comparisons} for every network × stratum level × metric; the exact null "
        "distribution without ties (≤ 50 non-zero pairs), exact enumeration of all sign flips with ties "
        "(≤ 13 non-zero pairs), otherwise the tie-corrected normal approximation without continuity correction. "
        "With three or more losses, a Friedman test (scipy.stats.friedmanchisquare) on the cases complete for "
        "all losses.",
        f"Too few pairs. A test is not run when it has fewer than {o['min_pairs']} pairs, or when even all "
        f"differences of one sign could not give p ≤ α (Wilcoxon: 2 / 2^n ≤ α needs n ≥ 6 non-zero differences "
        f"at α = 0.05); such rows are flagged in tests.csv and left out of the correction ({flagged} flagged).",
        f"Correction. {correction} over the whole family of {tested} tests run (every network, stratum level, "
        f"metric, pair and Friedman test), statsmodels.stats.multitest.multipletests, α = {o['alpha']:g}.",
        f"Effect sizes. Median paired difference A − B with a {100 * (1 - o['alpha']):g} % percentile bootstrap "
        f"CI (scipy.stats.bootstrap, {o['n_boot']} resamples, seeded; per test, not adjusted), mean difference, "
        "and the matched-pairs rank-biserial correlation (T+ − T−)/(T+ + T−) (+1: A larger in every pair).",
        f"Agreement. Predicted against GT biomarkers per network × loss, one pair per {_unit_name(comp)}: Lin's "
        "CCC (1/n moments, Fisher-z CI), Bland–Altman bias and 95 % limits of agreement, TOST equivalence "
        f"(two one-sided paired t-tests) with margin ±{100 * o['margin']:g} % of the mean GT value of the "
        f"compared cases, its p-values {correction}-corrected over all biomarkers × losses × networks; CP at the "
        "margin and TDI(0.90) under normality (Lin 2000).",
    ]


def _cell_summary(s: pd.Series, html_mode: bool) -> str:
    sep = "<br>" if html_mode else "; "
    return f"{fmt(s['mean'])} ± {fmt(s['sd'])}{sep}{fmt(s['median'])} [{fmt(s['q1'])}, {fmt(s['q3'])}]"


def _summary_rows(comp: Comparison, network: str, html_mode: bool) -> tuple[list[str], list[list[str]]]:
    s = comp.summary
    s = s[(s["network"] == network) & (s["stratum"] == ALL)]
    n_runs = comp.runs[comp.runs["network"] == network].groupby("loss")["run_id"].nunique()
    headers = ["loss", "runs", "n", *comp.metrics]
    rows = []
    for loss in comp.losses[network]:
        part = s[s["loss"] == loss].set_index("metric")
        n = int(part["n"].max()) if len(part) else 0
        rows.append([loss, str(int(n_runs.get(loss, 0))), str(n),
                     *[_cell_summary(part.loc[m], html_mode) if m in part.index else "–" for m in comp.metrics]])
    return headers, rows


def _sig_rows(comp: Comparison, network: str) -> tuple[list[str], list[list[str]]]:
    t = comp.tests
    t = t[(t["network"] == network) & (t["test"] == "wilcoxon") & t["significant"]]
    headers = ["stratum", "metric", "A − B", "n", "median diff [CI]", "mean diff", "rank-biserial", "p", "p adj."]
    rows = [[_stratum_label(r.stratum, r.level), r.metric, f"{r.loss_a} − {r.loss_b}", str(r.n),
             f"{fmt(r.median_diff)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]", fmt(r.mean_diff), fmt(r.rank_biserial),
             fmt_p(r.p), fmt_p(r.p_adjusted)] for r in t.itertuples()]
    return headers, rows


def _friedman_rows(comp: Comparison, network: str, only_all: bool) -> tuple[list[str], list[list[str]]]:
    t = comp.tests
    t = t[(t["network"] == network) & (t["test"] == "friedman")]
    if only_all:
        t = t[(t["stratum"] == ALL) | t["significant"]]
    headers = ["stratum", "metric", "n", "χ²", "Kendall's W", "p", "p adj.", "significant", "flag"]
    rows = [[_stratum_label(r.stratum, r.level), r.metric, str(r.n), fmt(r.statistic), fmt(r.kendall_w),
             fmt_p(r.p), fmt_p(r.p_adjusted), fmt(bool(r.significant)), r.flag] for r in t.itertuples()]
    return headers, rows


def _agreement_rows(comp: Comparison, network: str) -> tuple[list[str], list[list[str]]]:
    a = comp.agreement
    headers = ["loss", "biomarker", "n", "GT mean", "pred. mean", "CCC [CI]", "bias", "95 % LoA", "margin ±",
               "TOST p adj.", "equivalent", "CP(margin)", "TDI 0.90", "flag"]
    if a.empty:
        return headers, []
    a = a[a["network"] == network]
    rows = [[r.loss, BIOMARKER_TITLES.get(r.biomarker, r.biomarker), str(r.n), fmt(r.gt_mean), fmt(r.pred_mean),
             f"{fmt(r.ccc)} [{fmt(r.ccc_low)}, {fmt(r.ccc_high)}]", fmt(r.ba_bias),
             f"{fmt(r.ba_loa_low)} to {fmt(r.ba_loa_high)}", fmt(r.margin), fmt_p(r.tost_p_adjusted),
             fmt(bool(r.equivalent)), fmt(r.cp_margin), fmt(r.tdi_90), r.flag] for r in a.itertuples()]
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
    headers = ["network", "test", "stratum", "metric", "A", "B", "n", "n≠0", "method", "statistic", "p", "p adj.",
               "significant", "median diff [CI]", "rank-biserial", "W", "flag"]
    rows = [[r.network, r.test, _stratum_label(r.stratum, r.level), r.metric, r.loss_a, r.loss_b, str(r.n),
             str(r.n_nonzero), r.method, fmt(r.statistic), fmt_p(r.p), fmt_p(r.p_adjusted), fmt(bool(r.significant)),
             f"{fmt(r.median_diff)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if r.test == "wilcoxon" else "",
             fmt(r.rank_biserial), fmt(r.kendall_w), r.flag] for r in comp.tests.itertuples()]
    return headers, rows


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
"""


def write_report(comp: Comparison, folder: Path, context: dict[str, Any]) -> list[Path]:
    """Write every file of the report into ``folder`` (which exists); returns the files written.

    ``context``: experiment, tracking_uri, selection (text), comparison_run_id, created (ISO time),
    version.
    """
    folder = Path(folder)
    plots = folder / "plots"
    plots.mkdir()
    comp.tests.to_csv(folder / "tests.csv", index=False)
    comp.agreement.to_csv(folder / "agreement.csv", index=False)
    comp.summary.to_csv(folder / "summary.csv", index=False)
    comp.runs.to_csv(folder / "runs.csv", index=False)

    images: dict[str, list[tuple[str, str, bytes]]] = {}
    for network, losses in comp.losses.items():
        items = []
        for metric in comp.metrics:
            safe = _safe(f"{network}-{metric}")
            png = metric_plot(comp, network, metric)
            items.append((f"plots/{safe}-strata.png", f"{network}: {metric} by loss and stratum", png))
            if len(losses) >= 2:
                forest = forest_plot(comp, network, metric)
                if forest is not None:
                    items.append((f"plots/{safe}-forest.png", f"{network}: {metric}, paired differences", forest))
        images[network] = items
        for rel, _, png in items:
            (folder / rel).write_bytes(png)

    title = f"lossbench comparison: experiment {context['experiment']}"
    meta = [
        ("experiment", str(context["experiment"])),
        ("tracking store", str(context["tracking_uri"])),
        ("runs compared", f"{len(comp.runs)} ({context['selection']})"),
        ("MLflow comparison run", str(context.get("comparison_run_id") or "–")),
        ("created", str(context["created"])),
        ("lossbench", str(context.get("version", ""))),
        ("metrics", ", ".join(comp.metrics)),
        ("options", ", ".join(f"{k}={v}" for k, v in comp.options.items() if k not in ("metrics", "unit"))),
    ]
    tested = int(comp.tests["p"].notna().sum())
    n_sig = int(comp.tests["significant"].sum())
    headline = (f"{tested} tests run, {n_sig} significant after correction, "
                f"{int((comp.tests['flag'] != '').sum())} flagged as too small to test.")

    # ---- markdown
    md = [f"# {title}", "", _md_table(["", ""], meta), "", f"**{headline}**", "", "## Methods", ""]
    md += [f"- {p}" for p in methods_text(comp)]
    if comp.notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in comp.notes]
    for network in comp.losses:
        md += ["", f"## Network {network}", "", "### Per-case values, all cases (mean ± SD; median [IQR])", ""]
        md.append(_md_table(*_summary_rows(comp, network, html_mode=False)))
        if len(comp.losses[network]) >= 2:
            headers, rows = _sig_rows(comp, network)
            md += ["", f"### Significant paired differences ({len(rows)})", ""]
            md.append(_md_table(headers, rows) if rows else "None after correction.")
            headers, rows = _friedman_rows(comp, network, only_all=True)
            if rows:
                md += ["", "### Friedman tests (all cases, and significant strata)", "", _md_table(headers, rows)]
        md += ["", "### Plots", ""] + [f"![{alt}]({rel})" for rel, alt, _ in images[network]]
        headers, rows = _agreement_rows(comp, network)
        if rows:
            md += ["", "### Agreement of predicted with GT biomarkers", "", _md_table(headers, rows)]
    md += ["", "## Files", "", "- every test, with flags: [tests.csv](tests.csv)",
           "- agreement: [agreement.csv](agreement.csv)", "- per-stratum summaries: [summary.csv](summary.csv)",
           "- runs compared: [runs.csv](runs.csv)", ""]
    (folder / "report.md").write_text("\n".join(md), encoding="utf-8")

    # ---- html
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         '<table class="meta">' + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                          for k, v in meta) + "</table>",
         f"<p><strong>{html.escape(headline)}</strong></p>", "<h2>Methods</h2><ul>"]
    h += [f"<li>{html.escape(p)}</li>" for p in methods_text(comp)]
    h.append("</ul>")
    if comp.notes:
        h.append("<h2>Notes</h2><ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in comp.notes)
                 + "</ul>")
    for network in comp.losses:
        h.append(f"<h2>Network {html.escape(network)}</h2>")
        h.append("<h3>Per-case values, all cases (mean ± SD, median [IQR])</h3>")
        headers, rows = _summary_rows(comp, network, html_mode=True)
        esc = [[html.escape(c).replace("&lt;br&gt;", "<br>") for c in row] for row in rows]
        h.append(_html_table(headers, esc, raw=True))
        if len(comp.losses[network]) >= 2:
            headers, rows = _sig_rows(comp, network)
            h.append(f"<h3>Significant paired differences ({len(rows)})</h3>")
            h.append(_html_table(headers, rows) if rows else "<p>None after correction.</p>")
            headers, rows = _friedman_rows(comp, network, only_all=False)
            if rows:
                h.append(f"<details><summary>Friedman tests ({len(rows)})</summary>{_html_table(headers, rows)}"
                         "</details>")
        for _, alt, png in images[network]:
            data = base64.b64encode(png).decode("ascii")
            h.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        headers, rows = _agreement_rows(comp, network)
        if rows:
            h.append("<h3>Agreement of predicted with GT biomarkers</h3>")
            h.append(_html_table(headers, rows))
    headers, rows = _tests_rows(comp)
    h.append(f"<h2>All tests</h2><details><summary>{len(rows)} rows (tests.csv)</summary>"
             f"{_html_table(headers, rows)}</details>")
    headers, rows = _runs_rows(comp)
    h.append(f"<h2>Runs compared</h2><details><summary>{len(rows)} runs (runs.csv)</summary>"
             f"{_html_table(headers, rows)}</details>")
    h.append("</body></html>")
    (folder / "report.html").write_text("\n".join(h), encoding="utf-8")

    marker = {"format": "lossbench-report/1", **{k: v for k, v in context.items()}, "options": comp.options,
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

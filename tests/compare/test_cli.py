"""``lossbench compare`` end to end: real MLflow runs in a temporary SQLite store, the real executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lossbench.tracking import Tracker
from tests.compare._synth import cases_table, ground_truth, log_runs, matrix_parent

N_CASES = 30


def lossbench(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOSSBENCH_HOME": str(home), "COLUMNS": "200"}
    env.pop("LOSSBENCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lossbench", "compare", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """psma: a matrix of 3 losses × 2 seeds, one more dl run outside it, one FAILED run; and broken stores."""
    root = tmp_path_factory.mktemp("compare")
    home = root / "home"
    gt = ground_truth(N_CASES, seed=1)
    count = gt["gt_lesion_count"].to_numpy()
    gt["gt_lesion_count"] = np.where(np.arange(N_CASES) < 3, 1, np.where(count == 1, 2, count))  # 3 solitary
    effect = np.random.default_rng(5).normal(0, 0.1, N_CASES)

    def table(shift: float, seed: int, fp_rate: float = 1.0) -> pd.DataFrame:
        return cases_table(gt, dice_shift=shift, fp_rate=fp_rate, seed=seed, case_effect=effect, noise=0.03)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSBENCH_HOME", str(home))
        parent = matrix_parent(home, "psma")
        specs = [{"loss": loss, "network": "attunet", "fold": 0, "seed": seed, "table": table(shift, 10 * i + seed, fpr)}
                 for i, (loss, shift, fpr) in enumerate((("dl", 0.0, 1.0), ("dfl", -0.01, 3.0), ("l1dfl", 0.1, 1.0)))
                 for seed in (0, 1)]
        children = log_runs(home, "psma", specs, parent_of={i: parent for i in range(len(specs))}, tmp=root / "a")
        outside = log_runs(home, "psma", [{"loss": "dl", "network": "attunet", "fold": 0, "seed": 5,
                                           "table": table(0.0, 99)}], tmp=root / "b")
        # a cell the matrix found finished already (run before, by itself): listed in cells.json, not a child
        reused = log_runs(home, "psma", [{"loss": "l1dfl", "network": "attunet", "fold": 0, "seed": 2,
                                          "table": table(0.1, 98)}], tmp=root / "f")
        cells = root / "cells.json"
        cells.write_text(json.dumps([{"run_id": rid, "status": "finished"} for rid in children]
                                    + [{"run_id": reused[0], "status": "skipped"}, {"run_id": None}]))
        Tracker(None, "psma").log_artifacts(parent, [cells])
        failed = log_runs(home, "psma", [{"loss": "l1dfl", "network": "attunet", "fold": 0, "seed": 7, "table": None,
                                          "status": "FAILED"}], tmp=root / "c")
        matrix_parent(home, "empty")
        single = log_runs(home, "single", [{"loss": "dl", "network": "attunet", "fold": 0, "seed": s,
                                            "table": table(0.0, s)} for s in (0, 1)], tmp=root / "d")
        budget = {"config": {"epochs": 30, "patch": (48, 48, 48)}, "split": {"sha256": "abc"}}
        log_runs(home, "budgets", [
            {"loss": "dl", "network": "attunet", "fold": 0, "seed": 0, "table": table(0.0, 0),
             "params": {**budget, "config": {**budget["config"], "loss": "dl"}}},
            {"loss": "l1dfl", "network": "attunet", "fold": 0, "seed": 0, "table": table(0.1, 0),
             "params": {**budget, "config": {"epochs": 10, "patch": (48, 48, 48), "loss": "l1dfl"}}},
        ], tmp=root / "g")
        broken = log_runs(home, "broken", [{"loss": "dl", "network": "attunet", "fold": 0, "seed": 0,
                                            "table": table(0.0, 0)},
                                           {"loss": "l1dfl", "network": "attunet", "fold": 0, "seed": 0,
                                            "table": None}], tmp=root / "e")
    return {"root": root, "home": home, "parent": parent, "children": children, "outside": outside[0],
            "reused": reused[0],
            "failed": failed[0], "single": single, "broken": broken}


def comparison_runs(home: Path, experiment: str = "psma"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, list(client.search_runs([exp.experiment_id], "tags.`lossbench.kind` = 'comparison'",
                                           order_by=["attributes.start_time DESC"]))


def test_compare_reads_mlflow_writes_the_report_and_logs_a_comparison_run(store, tmp_path):
    home = store["home"]
    res = lossbench(home, "--experiment", "psma", "--metrics", "dice,fp", "--baseline", "l1dfl", "--out", "rep",
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "significant paired differences" in res.stdout
    assert "skipped unfinished runs: 1 FAILED" in res.stdout
    out = tmp_path / "rep"

    tests = pd.read_csv(out / "tests.csv", keep_default_na=False, na_values=[""])
    assert set(tests["network"]) == {"attunet"}
    assert set(tests["metric"]) - {m for m in tests["metric"] if m.startswith("abserr_")} == {"dice", "fp"}
    # effects are candidate − baseline (the design of issue 10): loss_b is the baseline
    wil = tests[tests["test"] == "wilcoxon"]
    assert set(wil["loss_b"]) == {"l1dfl"} and set(wil["loss_a"]) == {"dl", "dfl"}
    dice = wil[(wil["stratum"] == "all") & (wil["metric"] == "dice")].set_index("loss_a")
    assert dice.loc["dl", "n"] == N_CASES and dice.loc["dl", "significant"]
    assert dice.loc["dl", "median_diff"] < -0.05 and dice.loc["dl", "ci_high"] < 0
    primary = tests[(tests["test"] == "twoway") & (tests["family"] == "confirmatory")].set_index("loss_a")
    assert primary.loc["dl", "significant"] and primary.loc["dl", "better"] == "l1dfl"
    fp = wil[(wil["stratum"] == "all") & (wil["metric"] == "fp")].set_index("loss_a")
    assert fp.loc["dfl", "median_diff"] > 0
    solitary = tests[(tests["stratum"] == "count") & (tests["level"] == "1") & tests["test"].isin(["wilcoxon",
                                                                                                 "friedman"])]
    assert len(solitary) == 6 and (solitary["n"] == 3).all()  # 2 pairs + Friedman, 2 metrics
    assert solitary["p"].isna().all() and solitary["flag"].str.startswith("too few").all()
    flagged = tests[tests["flag"].notna() & (tests["flag"] != "")]
    assert flagged["p_adjusted"].isna().all() and not flagged["significant"].any()
    assert set(tests.loc[tests["test"] == "friedman", "loss_a"]) == {"l1dfl,dfl,dl"}

    runs = pd.read_csv(out / "runs.csv")
    expected = set(store["children"]) | {store["outside"], store["reused"]}
    assert set(runs["run_id"]) == expected and store["failed"] not in set(runs["run_id"])
    agreement = pd.read_csv(out / "agreement.csv")
    assert set(agreement["biomarker"]) == {"suvmax", "suvmean", "tmtv_ml", "tla", "lesion_count", "dmax_cm"}
    assert set(agreement["loss"]) == {"dl", "dfl", "l1dfl"} and (agreement["n"] == N_CASES).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["stratum"]) == {"all", "count", "volume", "activity", "spread"}

    html = (out / "report.html").read_text()
    n_png = len(list((out / "plots").glob("*.png")))
    assert n_png >= 6 and html.count('<img alt="') == n_png and html.count('src="data:image/png;base64,') == n_png
    assert "<table" in html and "Significant paired differences" in html and "dl − l1dfl" in html
    assert (out / "report.md").read_text().startswith("# lossbench comparison: experiment psma")

    client, comparisons = comparison_runs(home)
    assert len(comparisons) == 1
    run = comparisons[0]
    assert run.info.status == "FINISHED"
    assert set(run.data.tags["lossbench.compared_runs"].split(",")) == expected
    assert run.data.params["compare.correction"] == "holm" and run.data.params["compare.baseline"] == "l1dfl"
    assert run.data.metrics["n_runs"] == len(expected)
    assert json.loads((out / "lossbench-report.json").read_text())["comparison_run_id"] == run.info.run_id
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/tests.csv", "report/report.html", "report/report.md", "report/agreement.csv",
            "report/summary.csv", "report/plots"} <= logged
    local = Path(client.download_artifacts(run.info.run_id, "report/tests.csv", str(tmp_path / "dl")))
    assert local.read_text() == (out / "tests.csv").read_text()

    # a second comparison replaces the report folder, and the comparison run is not compared itself
    again = lossbench(home, "--experiment", "psma", "--metrics", "dice", "--out", "rep", "--correction",
                      "bonferroni", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    marker = json.loads((out / "lossbench-report.json").read_text())
    assert marker["comparison_run_id"] != run.info.run_id and marker["options"]["correction"] == "bonferroni"
    assert {m for m in pd.read_csv(out / "tests.csv")["metric"] if not m.startswith("abserr_")} == {"dice"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "rep"]  # no temporary folders left
    assert len(comparison_runs(home)[1]) == 2


def test_compare_children_of_a_matrix_run_with_seeds_kept_apart(store, tmp_path):
    res = lossbench(store["home"], "--experiment", "psma", "--parent", store["parent"], "--metrics", "dice",
                    "--seeds", "each", "--out", "rep", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    assert set(runs["run_id"]) == set(store["children"]) | {store["reused"]}  # not the outside run
    tests = pd.read_csv(tmp_path / "rep" / "tests.csv")
    overall = tests[(tests["stratum"] == "all") & (tests["test"] == "wilcoxon") & (tests["metric"] == "dice")]
    overall = overall.set_index(["loss_a", "loss_b"])
    assert len(overall) == 3 and (overall["n"] == 2 * N_CASES).all()  # (case, fold, seed) pairs of seeds 0, 1
    assert "losses have different numbers of runs (dfl 2, dl 2, l1dfl 3)" in res.stdout
    _, comparisons = comparison_runs(store["home"])
    assert comparisons[0].data.tags["lossbench.compared_parent"] == store["parent"]


def test_compare_exactly_the_runs_given(store, tmp_path):
    dl0, _, dfl0, _, l1dfl0, _ = store["children"]
    res = lossbench(store["home"], "--experiment", "psma", "--runs", f"{dl0},{l1dfl0}", "--metrics", "dice",
                    "--out", "rep", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(pd.read_csv(tmp_path / "rep" / "runs.csv")["run_id"]) == {dl0, l1dfl0}
    assert set(pd.read_csv(tmp_path / "rep" / "tests.csv")["test"]) == {"twoway", "wilcoxon"}  # no Friedman
    doc = json.loads(res.stdout)  # --json: one document on stdout, nothing else
    assert doc["report"] == str((tmp_path / "rep").resolve()) and set(doc["compared_runs"]) == {dl0, l1dfl0}
    assert doc["metrics"] == ["dice"] and sorted(doc["losses"]["attunet"]) == ["dl", "l1dfl"]
    assert {r["loss"] for r in doc["summary"]} == {"dl", "l1dfl"} and doc["counts"]["n_runs"] == 2
    _, comparisons = comparison_runs(store["home"])
    assert doc["comparison_run_id"] in {r.info.run_id for r in comparisons}


def test_python_api_compare_mirrors_the_command(store, tmp_path, monkeypatch):
    import lossbench
    from lossbench.errors import LossbenchError

    monkeypatch.setenv("LOSSBENCH_HOME", str(store["home"]))
    dl0, _, dfl0, _, l1dfl0, _ = store["children"]
    result = lossbench.compare(experiment="psma", runs=[dl0, l1dfl0], metrics=["dice"], out=tmp_path / "rep",
                               n_boot=0)
    assert set(result.compared_runs) == {dl0, l1dfl0} and (tmp_path / "rep" / "report.html").exists()
    assert set(result.comparison.tests["test"]) == {"twoway", "wilcoxon"}
    with pytest.raises(LossbenchError, match="give either --parent or --runs, not both"):
        lossbench.compare(experiment="psma", runs=[dl0], parent=store["parent"], out=tmp_path / "x")
    with pytest.raises(LossbenchError, match="only one loss"):
        lossbench.compare(experiment="single", out=tmp_path / "y")


@pytest.mark.parametrize("case", ["no runs", "single loss", "no cases.csv", "unknown metric", "server down",
                                  "failed run listed", "not a report folder", "different budgets"])
def test_compare_errors_are_one_line(store, tmp_path, case):
    args = {
        "no runs": ["--experiment", "empty"],
        "single loss": ["--experiment", "single"],
        "no cases.csv": ["--experiment", "broken"],
        "unknown metric": ["--experiment", "psma", "--metrics", "dice,dsc"],
        "server down": ["--experiment", "psma", "--tracking-uri", "http://127.0.0.1:9"],
        "failed run listed": ["--experiment", "psma", "--runs", f"{store['children'][0]},{store['failed']}"],
        "not a report folder": ["--experiment", "psma", "--out", "."],
        "different budgets": ["--experiment", "budgets"],
    }[case]
    message = {
        "no runs": "no finished cell runs in experiment 'empty'",
        "single loss": "only one loss (dl)",
        "no cases.csv": "have no evaluation/cases.csv",
        "unknown metric": "unknown metric 'dsc'",
        "server down": "is unreachable",
        "failed run listed": "is FAILED, not FINISHED",
        "not a report folder": "is not a lossbench report folder",
        "different budgets": "differ in config.epochs",
    }[case]
    (tmp_path / "keep.txt").write_text("mine")
    res = lossbench(store["home"], *args, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no report folder, no temp folder

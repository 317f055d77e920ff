"""``lossbench matrix`` end to end: cells in parallel through a local MLflow server, skipping, failures."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from lossbench.matrix import parse_int_list, scoped_assignments
from lossbench.settings import cell_argv
from lossbench.errors import ParameterError
from tests.conftest import lossbench_executable
from tests.test_run import mlflow_runs, run_env

TINY = [
    "--epochs", "2", "--val-every", "2", "--patch", "16", "--spacing", "8", "--batch", "2",
    "-S", "sw_batch_size=32", "-N", "channels=4,8,16", "-N", "strides=2,2", "-D", "n_folds=2",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lossbench_psma.synth import config_for, generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "psma-tiny"
    return generate_cohort(out, 6, seed=3, config=config_for(spacing=8.0), test_fraction=0.34)


def matrix(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([lossbench_executable(), "matrix", *args], capture_output=True, text=True,
                          env=run_env(home, **env), cwd=home.parent, timeout=900)


def test_parse_lists():
    assert parse_int_list("0-4", "--folds") == [0, 1, 2, 3, 4]
    assert parse_int_list("1-2,5,2", "--seeds") == [1, 2, 5]
    for bad in ("", "a", "3-1", "-1"):
        with pytest.raises(ParameterError):
            parse_int_list(bad, "--folds")


def test_scoped_parameters():
    per = scoped_assignments(["gamma=1", "l1dfl.epsilon=0.1"], ["dfl", "l1dfl"], "--loss-param")
    assert per == {"dfl": ["gamma=1"], "l1dfl": ["gamma=1", "epsilon=0.1"]}
    with pytest.raises(ParameterError, match="'dice' is not one of dfl, l1dfl"):
        scoped_assignments(["dice.gamma=1"], ["dfl", "l1dfl"], "--loss-param")


def test_matrix_parallel_then_rerun_skips_everything(cohort, tmp_path):
    home = tmp_path / "home"
    args = ["--loss", "dl,l1dfl", "--net", "attunet", "--seeds", "0,1", "--data", str(cohort), *TINY]
    first = matrix(home, *args, "--jobs", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    server = re.search(r"local MLflow server at (http://127\.0\.0\.1:\d+)", first.stdout)
    assert server, first.stdout
    with pytest.raises(OSError):  # stopped at the end
        urllib.request.urlopen(server.group(1) + "/health", timeout=2)

    client, runs = mlflow_runs(home)
    parents = [r for r in runs if r.data.tags.get("lossbench.kind") == "matrix"]
    cells = [r for r in runs if r.data.tags.get("lossbench.kind") == "cell"]
    assert len(parents) == 1 and len(cells) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in cells)
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parent.info.run_id}
    assert sorted((r.data.tags["lossbench.loss"], r.data.tags["lossbench.seed"]) for r in cells) == [
        ("dl", "0"), ("dl", "1"), ("l1dfl", "0"), ("l1dfl", "1")]
    # one budget for every cell, recorded on the parent
    assert parent.data.params["budget.epochs"] == "2" and parent.data.params["budget.patch"] == "16,16,16"
    assert len({r.data.params["config.epochs"] for r in cells}) == 1
    listed = json.loads(Path(client.download_artifacts(parent.info.run_id, "cells.json", str(tmp_path))).read_text())
    assert {c["run_id"] for c in listed} == {r.info.run_id for r in cells}

    again = matrix(home, *args, "--jobs", "2")
    assert again.returncode == 0
    assert "4 already finished, 0 to run" in again.stdout and "local MLflow server" not in again.stdout
    assert len([r for r in mlflow_runs(home)[1] if r.data.tags.get("lossbench.kind") == "cell"]) == 4
    planned = matrix(home, *args, "--dry-run", "--json")  # one JSON document on stdout, nothing else
    assert planned.returncode == 0, planned.stderr[-2000:]
    doc = json.loads(planned.stdout)
    assert doc["dry_run"] is True and doc["failed"] == 0 and len(doc["cells"]) == 4
    assert {c["status"] for c in doc["cells"]} == {"skipped"}
    assert {c["run_id"] for c in doc["cells"]} == {r.info.run_id for r in cells}

    # and the comparison reads the matrix back from MLflow alone
    report = tmp_path / "report"
    compared = subprocess.run(
        [lossbench_executable(), "compare", "--parent", parent.info.run_id, "--out", str(report), "--min-pairs", "2"],
        capture_output=True, text=True, env=run_env(home), cwd=tmp_path, timeout=600,
    )
    assert compared.returncode == 0, compared.stdout[-3000:] + compared.stderr[-3000:]
    tests = pd.read_csv(report / "tests.csv")
    assert set(tests["network"]) == {"attunet"} and {"dl", "l1dfl"} <= set(tests["loss_a"]) | set(tests["loss_b"])
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table" in html
    kinds = [r.data.tags.get("lossbench.kind") for r in mlflow_runs(home)[1]]
    assert kinds.count("comparison") == 1


def test_failing_cell_does_not_stop_the_others(cohort, tmp_path):
    home = tmp_path / "home"
    result = matrix(home, "--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *TINY, "--jobs", "2",
                    LOSSBENCH_FAIL_AT_EPOCH="dl-attunet-fold0-seed1:1")
    assert result.returncode == 1
    assert "1 of 2 cells failed" in result.stderr
    server = re.search(r"local MLflow server at (http://127\.0\.0\.1:\d+)", result.stdout)
    assert server, result.stdout
    with pytest.raises(OSError):  # stopped although the matrix failed
        urllib.request.urlopen(server.group(1) + "/health", timeout=2)
    assert "re-run dl-attunet-fold0-seed1 with: lossbench run --loss dl" in " ".join(result.stderr.split())
    _, runs = mlflow_runs(home)
    status = {r.data.tags.get("lossbench.seed"): r.info.status for r in runs if r.data.tags.get("lossbench.kind") == "cell"}
    assert status == {"0": "FINISHED", "1": "FAILED"}
    parent = next(r for r in runs if r.data.tags.get("lossbench.kind") == "matrix")
    assert parent.info.status == "FAILED" and parent.data.metrics["cells_failed"] == 1

    # without the injected failure the failed cell resumes and the matrix completes
    fixed = matrix(home, "--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *TINY)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "1 already finished, 1 to run" in fixed.stdout


def test_matrix_refuses_unknown_names_before_running(cohort, tmp_path):
    result = matrix(tmp_path / "home", "--loss", "dl,l1dlf", "--data", str(cohort), *TINY)
    assert result.returncode == 1 and "did you mean 'l1dfl'?" in result.stderr
    assert result.stderr.count("\n") == 1


def test_cell_command_reproduces_the_cell(cohort):
    from lossbench.settings import build_config
    from lossbench.registry import load_registry

    reg = load_registry()
    cfg = build_config(reg, config=None, loss="l1dfl", net="attunet", dataset=None, data=str(cohort), fold=1,
                       seed=2, preset=None, loss_param=["epsilon=0.1"], net_param=["channels=4,8,16",
                       "strides=2,2"], data_param=["n_folds=2"], train={"epochs": 3, "patch": "16"})
    cmd = cell_argv(cfg, experiment="e", tracking_uri=None, parent_run_id=None, device="cpu")
    # parse the command back with the run command's own option handling
    from lossbench.config import parse_assignments

    def values(flag):
        return [cmd[i + 1] for i, c in enumerate(cmd) if c == flag]

    again = build_config(
        reg, config=None, loss=values("--loss")[0], net=values("--net")[0], dataset=values("--dataset")[0],
        data=None, fold=int(values("--fold")[0]), seed=int(values("--seed")[0]), preset=values("--preset")[0],
        loss_param=values("-L"), net_param=values("-N"), data_param=values("-D"),
        train=parse_assignments(values("-S")),
    )
    assert again == cfg

"""``lossbench run`` end to end: the real executable on a tiny synthetic cohort, MLflow read back.

One tiny configuration keeps this affordable on 2 cores: 8-mm phantoms, 16³ patches, a
three-level Attention U-Net with 4–16 channels, 3 epochs, validation every epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import lossbench_executable, wait_until

TINY = [
    "--epochs", "3", "--val-every", "1", "--patch", "16", "--spacing", "8", "--batch", "2", "-S", "sw_batch_size=32",
    "-N", "channels=4,8,16", "-N", "strides=2,2", "-D", "n_folds=2",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lossbench_psma.synth import config_for, generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "psma-tiny"
    return generate_cohort(out, 8, seed=3, config=config_for(spacing=8.0), test_fraction=0.25)


def mlflow_runs(home: Path, experiment: str = "lossbench"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = list(client.search_runs([exp.experiment_id])) if exp else []
    return client, runs


def assert_lock_free(lock: Path) -> None:
    """The cell's OS lock can be taken at once: nobody holds it."""
    from filelock import FileLock

    with FileLock(str(lock), timeout=0):
        pass


def run_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LOSSBENCH_HOME": str(home), "COLUMNS": "160"}
    env.pop("LOSSBENCH_DEBUG", None)
    env.update(extra)
    return env


def lossbench(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([lossbench_executable(), "run", *args], capture_output=True, text=True,
                          env=run_env(home, **extra), cwd=home.parent, timeout=600)


def test_run_end_to_end_logs_everything(cohort, tmp_path):
    home = tmp_path / "home"
    first = lossbench(home, "--data", str(cohort), "--loss", "l1dfl", "--net", "attunet", *TINY)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "l1dfl-attunet-fold0-seed0" in first.stdout

    client, runs = mlflow_runs(home)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "l1dfl-attunet-fold0-seed0"
    params = run.data.params
    assert params["config.loss"] == "l1dfl" and params["config.epochs"] == "3"
    assert params["config.loss_params.epsilon"] == "0.05"
    assert params["config.network_params.channels"] == "4,8,16"
    assert params["loss_plugin.plugin"] == "l1dfl" and params["loss_plugin.distribution"] == "lossbench"
    assert params["network_plugin.plugin"] == "monai" and params["dataset_plugin.plugin"] == "psma"
    assert len(params["split.sha256"]) == 64 and params["code.version"].startswith("0.1.0")
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert len(client.get_metric_history(run.info.run_id, "val_dice")) == 3

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best_model.pt", "config.json", "splits.json", "evaluation", "predictions", "pictures"} <= artifacts
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "pictures")}
    assert len(pictures) == int(params["split.n_test"]) and all(p.endswith(".png") for p in pictures)
    local = Path(client.download_artifacts(run.info.run_id, "evaluation/cases.csv", str(tmp_path)))
    cases = pd.read_csv(local)
    assert len(cases) == int(params["split.n_test"]) == 2
    assert set(cases["run_id"]) == {run.info.run_id}
    assert cases["dice"].between(0, 1).all()
    for column in ("tp", "fp", "fn", "fp_volume_ml", "gt_suvmax", "gt_dmax_cm", "stratum_count"):
        assert column in cases.columns
    assert run.data.metrics["test_dice_mean"] == pytest.approx(cases["dice"].mean())
    assert run.data.metrics["test_tp_pooled"] == cases["tp"].sum()

    import torch

    best = Path(client.download_artifacts(run.info.run_id, "best_model.pt", str(tmp_path)))
    weights = torch.load(best, weights_only=True)
    assert weights["network"] == "attunet" and weights["epoch"] == int(run.data.metrics["best_epoch"])

    # the same cell again: recognised as finished, no second run
    again = lossbench(home, "--data", str(cohort), "--loss", "l1dfl", "--net", "attunet", *TINY)
    assert again.returncode == 0 and "already has a finished run" in again.stdout
    assert len(mlflow_runs(home)[1]) == 1


def final_metrics(run) -> dict[str, float]:
    keep = ("best_val_dice", "best_epoch", "test_dice_mean", "test_fp_pooled", "test_tp_pooled", "train_loss")
    return {k: run.data.metrics[k] for k in keep if k in run.data.metrics}


def test_same_seed_same_metrics_and_killed_run_resumes_to_the_same_result(cohort, tmp_path):
    args = ["--data", str(cohort), "--loss", "dfl", "--net", "attunet", "--seed", "1", *TINY]
    home_a = tmp_path / "a"
    assert lossbench(home_a, *args).returncode == 0
    reference = final_metrics(mlflow_runs(home_a)[1][0])

    home_b = tmp_path / "b"
    proc = subprocess.Popen([lossbench_executable(), "run", *args], env=run_env(home_b), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: list((home_b / "checkpoints").glob("*/state.pt")), process=proc,
               what="the first checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert mlflow_runs(home_b)[1][0].info.status == "RUNNING"  # killed: nobody closed it

    resumed = lossbench(home_b, *args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resum" in resumed.stdout
    runs = mlflow_runs(home_b)[1]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert final_metrics(runs[0]) == reference


def test_crash_marks_run_failed_then_rerun_resumes(cohort, tmp_path):
    home = tmp_path / "home"
    args = ["--data", str(cohort), "--loss", "dl", "--net", "attunet", *TINY]
    crashed = lossbench(home, *args, LOSSBENCH_FAIL_AT_EPOCH="1")
    assert crashed.returncode == 1
    assert crashed.stderr.startswith("error: training failed") and crashed.stderr.count("\n") == 1
    client, runs = mlflow_runs(home)
    assert runs[0].info.status == "FAILED"
    assert "injected failure at epoch 1" in runs[0].data.tags["lossbench.error"]

    rerun = lossbench(home, *args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    client, runs = mlflow_runs(home)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [0, 1, 2]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--loss", "l1dlf"], "did you mean 'l1dfl'?"),
        (["--net", "attunet", "--patch", "18"], "patch"),
        (["--data", "/nonexistent/psma"], "does not exist"),
        (["-L", "gama=1"], "did you mean 'gamma'?"),
        (["--fold", "7", "-D", "n_folds=2"], "fold"),
        (["--preset", "gpu"], "unknown preset"),
    ],
)
def test_bad_options_fail_before_training(cohort, tmp_path, args, fragment):
    home = tmp_path / "home"
    full = ["--data", str(cohort), *TINY]
    # later options win: the bad option is appended after the tiny defaults
    result = lossbench(home, *full, *args)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert not (home / "checkpoints").exists()
    _, runs = mlflow_runs(home) if (home / "mlflow.db").exists() else (None, [])
    assert runs == []


def test_config_file_sets_loss_and_training(cohort, tmp_path):
    from lossbench.settings import build_config
    from lossbench.registry import load_registry

    cfg_file = tmp_path / "cell.toml"
    cfg_file.write_text(
        '[loss]\nname = "l1dfl"\nepsilon = 0.1\n\n[network]\nname = "segresnet"\ninit_filters = 4\n\n'
        '[dataset]\nname = "psma"\nn_folds = 2\n\n[train]\nepochs = 5\npatch = [32, 32, 16]\nseed = 4\n'
    )
    cfg = build_config(
        load_registry(), config=cfg_file, loss=None, net=None, dataset=None, data=str(cohort), fold=None,
        seed=None, preset=None, loss_param=["gamma=0"], net_param=[], data_param=[], train={"epochs": 2},
    )
    assert (cfg.loss, cfg.loss_params["epsilon"], cfg.loss_params["gamma"]) == ("l1dfl", 0.1, 0.0)
    assert cfg.network == "segresnet" and cfg.network_params["init_filters"] == 4
    assert cfg.dataset_params["n_folds"] == 2 and cfg.dataset_params["data"] == str(cohort)
    assert (cfg.epochs, cfg.patch, cfg.seed, cfg.preset) == (2, (32, 32, 16), 4, "cpu")


def test_unreachable_tracking_server_is_one_line(cohort, tmp_path):
    result = lossbench(tmp_path / "home", "--data", str(cohort), *TINY, "--tracking-uri", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert result.stderr.count("\n") == 1


def test_sigterm_marks_the_run_killed_and_a_rerun_resumes_it(cohort, tmp_path):
    home = tmp_path / "home"
    args = ["--data", str(cohort), "--loss", "dl", "--net", "attunet", *TINY, "--epochs", "400"]
    proc = subprocess.Popen([lossbench_executable(), "run", *args], env=run_env(home), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list((home / "checkpoints").glob("*/state.pt")), process=proc, what="the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    runs = mlflow_runs(home)[1]
    assert [r.info.status for r in runs] == ["KILLED"]
    assert_lock_free(next((home / "checkpoints").glob("*/lock")))  # released
    # resuming continues the same run from its checkpoint: stop it at the first resumed epoch
    import torch

    state = torch.load(next((home / "checkpoints").glob("*/state.pt")), weights_only=False)
    resumed = lossbench(home, *args, "--resume", LOSSBENCH_FAIL_AT_EPOCH=str(state["epoch"] + 1))
    assert f"resuming MLflow run {runs[0].info.run_id}" in " ".join(resumed.stdout.split())
    assert resumed.returncode == 1 and f"injected failure at epoch {state['epoch'] + 1}" in resumed.stderr
    assert [r.info.status for r in mlflow_runs(home)[1]] == ["FAILED"]

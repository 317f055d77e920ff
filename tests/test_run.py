"""``lossbench run`` end to end: the real executable on a tiny synthetic cohort, MLflow read back.

One tiny configuration keeps this affordable on 2 cores: 8-mm phantoms, 16³ patches, a
three-level Attention U-Net with 4–16 channels, 3 epochs, validation every epoch.
"""

from __future__ import annotations

import json
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
    # --json: one document on stdout, the progress and notes on stderr
    as_json = lossbench(home, "--data", str(cohort), "--loss", "l1dfl", "--net", "attunet", *TINY, "--json")
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    doc = json.loads(as_json.stdout)
    assert doc["run_id"] == run.info.run_id and doc["status"] == "skipped" and doc["cell"] == "l1dfl-attunet-fold0-seed0"
    assert doc["best_epoch"] == int(run.data.metrics["best_epoch"])
    assert doc["summary"]["test_dice_mean"] == pytest.approx(run.data.metrics["test_dice_mean"])
    assert "already has a finished run" in as_json.stderr


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
        (["-S", "cache_rate=7"], "cache_rate"),
        (["-S", "amp=maybe"], "amp"),
        (["-S", "affine_prob=2"], "affine_prob"),
        (["-S", "lr=-1"], "lr"),
        (["--loss", "dce", "-L", "lambda_ce=-1"], "loss 'dce' cannot be built"),  # its constructor raises
        (["--experiment", "../../x"], "not a usable experiment name"),
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


def test_a_misspelt_config_table_is_an_error_not_ignored(tmp_path):
    from lossbench.errors import ConfigError
    from lossbench.registry import load_registry
    from lossbench.settings import build_config

    cfg_file = tmp_path / "cell.toml"
    cfg_file.write_text("[trainer]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"unknown table \[trainer\]"):
        build_config(load_registry(), config=cfg_file, loss=None, net=None, dataset=None, data=None, fold=None,
                     seed=None, preset=None, loss_param=[], net_param=[], data_param=[], train={})


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
    assert proc.wait(timeout=120) == 130, proc.stderr.read()[-3000:]
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


def test_home_under_a_regular_file_says_what_happened(cohort, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = subprocess.run([lossbench_executable(), "run", "--data", str(cohort), *TINY], capture_output=True,
                            text=True, env=run_env(blocker / "home"), cwd=tmp_path, timeout=600)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot be a folder" in result.stderr and "FAILED" not in result.stderr


def test_passwords_are_never_shown(cohort, tmp_path):
    result = lossbench(tmp_path / "home", "--data", str(cohort), *TINY,
                       "--tracking-uri", "http://alice:s3cret-pw@127.0.0.1:9")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


@pytest.fixture
def auth_server():
    """A stand-in for a password-protected MLflow server: /health answers 200 only with basic auth
    alice:s3cret-pw (401 otherwise); the REST API answers 403. Records the Authorization headers."""
    import base64
    import http.server
    import threading

    seen: list[tuple[str, str]] = []
    good = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            auth = self.headers.get("Authorization", "")
            seen.append((self.path.split("?")[0], auth))
            if self.path == "/health":
                code, body = (200, b"OK") if auth == good else (401, b"unauthorized")
            else:
                code, body = 403, b'{"error_code": "PERMISSION_DENIED", "message": "no access"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen, good
    server.shutdown()


def test_a_password_protected_server_passes_the_health_check(cohort, tmp_path, auth_server):
    where, seen, good = auth_server
    base = ["--data", str(cohort), *TINY]
    # credentials in the URI: sent as basic auth, never shown
    result = lossbench(tmp_path / "a", *base, "--tracking-uri", f"http://alice:s3cret-pw@{where}")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert ("/health", good) in seen and "answered" not in result.stderr  # the health check passed
    assert "s3cret-pw" not in result.stdout + result.stderr
    # MLflow's own variables: the same, and MLflow's requests carry them too
    seen.clear()
    result = lossbench(tmp_path / "b", *base, "--tracking-uri", f"http://{where}",
                       MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="s3cret-pw")
    assert result.returncode == 1 and ("/health", good) in seen
    assert any(path.startswith("/api/") and auth == good for path, auth in seen)
    assert "s3cret-pw" not in result.stdout + result.stderr
    # no credentials: one line that says what to set
    result = lossbench(tmp_path / "c", *base, "--tracking-uri", f"http://{where}")
    assert result.returncode == 1 and "answered 401" in result.stderr and "MLFLOW_TRACKING_USERNAME" in result.stderr
    _, runs = mlflow_runs(tmp_path / "a") if (tmp_path / "a" / "mlflow.db").exists() else (None, [])
    assert runs == []


def test_redact_and_cell_argv_keep_passwords_out(monkeypatch):
    from lossbench.settings import cell_argv
    from lossbench.tracking import redact
    from lossbench.registry import load_registry
    from lossbench.settings import build_config

    assert redact("at http://u:pw@h:5000/x and https://v:q@w") == "at http://u:***@h:5000/x and https://v:***@w"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    assert redact("failed: token hunter2") == "failed: token ***"
    cfg = build_config(load_registry(), config=None, loss=None, net=None, dataset=None, data=None, fold=None,
                       seed=None, preset=None, loss_param=[], net_param=[], data_param=[], train={})
    argv = cell_argv(cfg, experiment="e", tracking_uri="http://u:pw@h:5000")
    assert argv[argv.index("--tracking-uri") + 1] == "http://h:5000"


def test_each_epoch_once_in_mlflow_after_kills_at_the_worst_moments(cohort, tmp_path):
    """kill -9 right after the run is created (no params yet), right after a checkpoint is written
    (its epoch not yet logged), and after the summary was logged but before the run is FINISHED:
    the re-runs repair each, every history has each step once and the summary one value."""
    home = tmp_path / "home"
    args = ["--data", str(cohort), "--loss", "dl", "--net", "attunet", *TINY]
    first = lossbench(home, *args, LOSSBENCH_KILL_AT="after-create-run")
    assert first.returncode == -signal.SIGKILL
    assert [r.data.params for r in mlflow_runs(home)[1]] == [{}]
    second = lossbench(home, *args, LOSSBENCH_KILL_AT="after-checkpoint:1")
    assert second.returncode == -signal.SIGKILL
    client, (run,) = mlflow_runs(home)
    assert run.data.params["config.loss"] == "dl"  # the killed run got its params
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_dice")] == [0]  # epoch 1 unlogged
    # everything logged (summary, tables, model), killed before the run is marked FINISHED
    assert lossbench(home, *args, LOSSBENCH_KILL_AT="before-finish").returncode == -signal.SIGKILL
    third = lossbench(home, *args)
    assert third.returncode == 0, third.stderr[-2000:]
    client, (run,) = mlflow_runs(home)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_dice", "val_dice_best", "lr", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2], key
    for key in ("test_dice_mean", "best_epoch"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    # the model was logged before the kill: the re-run does not log a second one
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]


def test_two_runs_of_one_cell_on_a_fresh_store(cohort, tmp_path):
    """Started at once on a store that does not exist yet: one trains, the other is told the cell is
    running (no SQLite migration race); the OS lock is free again once the first is gone."""
    home = tmp_path / "home"
    args = [lossbench_executable(), "run", "--data", str(cohort), "--loss", "dl", "--net", "attunet", *TINY,
            "--epochs", "400"]
    procs = [subprocess.Popen(args, env=run_env(home), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        loser = wait_until(lambda: next((p for p in procs if p.poll() is not None), None),
                           what="one of the two to stop")
        out, err = loser.communicate()
        assert loser.returncode == 1, err[-2000:]
        assert err.startswith("error: this cell is already running in process ") and err.count("\n") == 1, err
        winner = next(p for p in procs if p is not loser)
        wait_until(lambda: list((home / "checkpoints").glob("*/state.pt")), process=winner,
                   what="the first checkpoint")
        winner.send_signal(signal.SIGKILL)
        winner.wait()
        assert_lock_free(next((home / "checkpoints").glob("*/lock")))  # the kernel released it
        assert [r.info.status for r in mlflow_runs(home)[1]] == ["RUNNING"]  # one run, no FAILED second
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_processes_opening_a_fresh_store_at_once_do_not_race_its_migrations(tmp_path):
    """Different cells start together: each opens the store; one creates it, the others wait."""
    import sys

    home = tmp_path / "home"
    code = "from lossbench.tracking import Tracker; Tracker(None, 'lossbench'); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=run_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-300:] for _, err in results]
    assert (home / "mlflow.db.lock").exists()


def test_a_kill_while_the_store_is_created_leaves_no_half_migrated_store(tmp_path):
    """The store is created under a temporary name and renamed: kill -9 during MLflow's migrations
    leaves a temporary that the next process removes, and that process opens the store normally."""
    import sys
    import time

    home = tmp_path / "home"
    code = "from lossbench.tracking import Tracker; Tracker(None, 'lossbench'); print('ok')"
    proc = subprocess.Popen([sys.executable, "-c", code], env=run_env(home), stdout=subprocess.PIPE, text=True)
    wait_until(lambda: list(home.glob(".mlflow.db.*.tmp")), process=proc, what="the store's creation", poll=0.05)
    time.sleep(0.3)  # into the migrations
    proc.kill()
    proc.wait()
    again = subprocess.run([sys.executable, "-c", code], env=run_env(home), capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == "ok", again.stderr[-500:]
    assert not list(home.glob(".mlflow.db.*"))


def test_a_closed_stdout_does_not_fail_the_training(cohort, tmp_path):
    """``lossbench run … | head -1``: the reader goes away, the training finishes."""
    home = tmp_path / "home"
    proc = subprocess.Popen([lossbench_executable(), "run", "--data", str(cohort), "--loss", "dl", "--net",
                             "attunet", *TINY], env=run_env(home), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline()  # the first line, then the reader is gone
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=600) == 0, err[-2000:]
    assert "BrokenPipe" not in err
    (run,) = mlflow_runs(home)[1]
    assert run.info.status == "FINISHED"

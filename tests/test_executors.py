"""Executors: classification of an ended cell, preflight, process hygiene, and the slurm executor
end to end through submitit's DebugExecutor and LocalExecutor (the code path of a Slurm cluster
without the cluster), including a preemption signal → requeue → resume of the same run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossbench.errors import LossbenchError
from lossbench.executors import CRASH_PREFIX, HEADER_PREFIX, PROCESS_PREFIX, Executor, classify, preflight
from tests.conftest import lossbench_executable, wait_until
from tests.test_run import mlflow_runs, run_env

#: A cell long enough (12 epochs, a checkpoint each) to be interrupted after its first checkpoint.
LONG = [
    "--epochs", "12", "--val-every", "1", "--patch", "16", "--spacing", "8", "--batch", "2",
    "-S", "sw_batch_size=32", "-N", "channels=4,8,16", "-N", "strides=2,2", "-D", "n_folds=2", "--device", "cpu",
]
SHORT = [*LONG[:1], "2", *LONG[2:]]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lossbench_psma.synth import config_for, generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "psma-tiny"
    return generate_cohort(out, 6, seed=3, config=config_for(spacing=8.0), test_fraction=0.34)


def start_matrix(home: Path, *args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*prefix, lossbench_executable(), "matrix", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=run_env(home, **env), cwd=home.parent)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def cell_logs(home: Path) -> dict[str, Path]:
    return {p.stem: p for p in (home / "matrix").glob("*/*.log") if p.stem != "mlflow-server"}


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_checkpoint(home: Path, cell: str, proc: subprocess.Popen) -> str:
    """The log of ``cell`` once its first checkpoint is written (its process still training)."""
    def ready():
        logs = cell_logs(home)
        text = log_text(logs[cell]) if cell in logs else ""
        return text if "checkpoint" in text and PROCESS_PREFIX in text else ""

    return wait_until(ready, what=f"the first checkpoint of {cell}", process=proc, timeout=600)


def last_pid(text: str, prefix: str) -> int:
    return int(re.findall(rf"{re.escape(prefix)} (\d+)", text)[-1])


def cell_runs(home: Path) -> list:
    return [r for r in mlflow_runs(home)[1] if r.data.tags.get("lossbench.kind") == "cell"]


def epochs_logged(home: Path, run_id: str, key: str = "train_loss") -> list[int]:
    client, _ = mlflow_runs(home)
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# -- what an ended cell means ----------------------------------------------------------------------
@pytest.mark.parametrize("code, lines, status, retryable", [
    (0, ["done"], "finished", False),
    (1, ["error: --loss-param 'gamma': expects float, got 'x'"], "failed", False),
    (1, ["error: loss dl became nan at epoch 3; lower --lr or check the loss parameters"], "failed", False),
    (1, [f"{CRASH_PREFIX} RuntimeError: CUDA out of memory (the MLflow run is marked FAILED; …)"], "failed", True),
    (1, ["Traceback (most recent call last):", "ZeroDivisionError"], "failed", True),
    (-9, ["epoch 3/10 …"], "failed", True),
    (-11, [], "failed", True),
    (130, ["aborted"], "preempted", True),
])
def test_classify(code, lines, status, retryable):
    outcome = classify(code, lines)
    assert (outcome.status, outcome.retryable) == (status, retryable)
    assert classify(code, lines, cancelled=True).status == ("finished" if code == 0 else "cancelled")


class _Remote(Executor):
    name = "remote"
    multi_host = True


@pytest.mark.parametrize("uri, artifacts, env, fragment", [
    ("sqlite:////x/mlflow.db", "file:///x", {}, "cannot share the store"),
    ("file:///x/mlruns", "file:///x", {}, "cannot share the store"),
    ("http://127.0.0.1:5000", "mlflow-artifacts:/1", {}, "127.0.0.1/localhost"),
    ("http://head:5000", "file:///home/me/mlartifacts/1", {}, "--serve-artifacts"),
    ("http://head:5000", "mlflow-artifacts:/1", {}, "LOSSBENCH_CHECKPOINTS"),
])
def test_preflight_refuses_one_host_stores(monkeypatch, uri, artifacts, env, fragment):
    monkeypatch.delenv("LOSSBENCH_CHECKPOINTS", raising=False)
    with pytest.raises(LossbenchError, match=re.escape(fragment)):
        preflight(_Remote(), tracking_uri=uri, artifact_location=artifacts)
    preflight(Executor(), tracking_uri=uri, artifact_location=artifacts)  # one host: anything goes


def test_preflight_accepts_a_shared_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("LOSSBENCH_CHECKPOINTS", str(tmp_path))
    preflight(_Remote(), tracking_uri="http://head:5000", artifact_location="mlflow-artifacts:/1")
    preflight(_Remote(), tracking_uri="http://head:5000", artifact_location="file:///nfs/a", shared_fs=True)


def test_executors_are_listed_and_described(run_cli):
    listed = run_cli("list", "executors")
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in ("local", "ray", "slurm"))
    shown = run_cli("show", "executor", "slurm")
    assert shown.returncode == 0 and "cluster" in shown.stdout and "debug" in shown.stdout


def test_unknown_executor_and_bad_options_are_one_line(run_cli, cohort):
    bad = run_cli("matrix", "--loss", "dl", "--data", str(cohort), *SHORT, "-E", "slrum")
    assert bad.returncode == 1 and "did you mean 'slurm'?" in bad.stderr and bad.stderr.count("\n") == 1
    bad = run_cli("matrix", "--loss", "dl", "--data", str(cohort), *SHORT, "-E", "slurm", "-X", "clutser=debug")
    assert bad.returncode == 1 and "no parameter 'clutser'" in bad.stderr


def test_local_executor_works_with_the_executors_plugin_blocked(monkeypatch):
    from lossbench.executors import build_executor
    from lossbench.executors.local import LocalExecutor
    from lossbench.registry import load_registry

    monkeypatch.setenv("LOSSBENCH_DISABLE_PLUGINS", "executors")
    reg = load_registry()
    assert reg.names("executor") == []
    assert isinstance(build_executor(reg, None, [], jobs=2), LocalExecutor)


# -- processes die with their parent; a recorded stale server is stopped ---------------------------
PARENT = """
import sys, time
from lossbench.processes import spawn
child = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_dies_with_its_killed_parent():
    from lossbench.processes import alive

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()  # SIGKILL: no finally, no handler runs in the parent
    parent.wait()
    wait_until(lambda: not alive(child) or _zombie(child), what="the orphaned child to end", timeout=30)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_recorded_server_is_stopped_only_if_it_is_the_same_process(tmp_path):
    from lossbench.processes import alive, read_record, stop_recorded, write_record

    record = tmp_path / "server.json"
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    write_record(record, survivor, port=12345)
    assert read_record(record)["port"] == 12345
    stopped = stop_recorded(record)
    assert stopped is not None and stopped["pid"] == survivor.pid
    survivor.wait(timeout=15)
    assert not record.exists()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:  # a record whose process id now belongs to another program is left alone
        record.write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename, "cmdline": ["mlflow", "server"]}))
        assert stop_recorded(record) is None and alive(other.pid) and not record.exists()
    finally:
        other.kill()
        other.wait()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_kill_9_of_a_matrix_leaves_no_process_and_the_rerun_completes(cohort, tmp_path):
    """Issue 15 #9: cells and the local MLflow server die with a killed matrix; the re-run resumes."""
    from lossbench.processes import alive

    home = tmp_path / "home"
    args = ["--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *LONG, "--jobs", "2"]
    proc = start_matrix(home, *args)
    for cell in ("dl-attunet-fold0-seed0", "dl-attunet-fold0-seed1"):
        wait_until(lambda c=cell: "started MLflow run" in log_text(cell_logs(home).get(c, Path("/nonexistent"))),
                   what=f"{cell} to start", process=proc, timeout=600)
    record = next((home / "matrix").glob("*/mlflow-server.json"))
    server = json.loads(record.read_text())["pid"]
    children = _children(proc.pid)
    assert server in children and len(children) == 3  # two cells and the server
    proc.kill()
    proc.communicate()
    wait_until(lambda: not any(alive(p) and not _zombie(p) for p in children), what="the cells and the server to end",
               timeout=120)

    again = start_matrix(home, *args)
    code, out, err = finish(again)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "0 already finished, 2 to run" in out
    runs = cell_runs(home)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert not record.exists()  # the new server was stopped and unrecorded (the matrix id is the same)


# -- the slurm executor through submitit's stand-ins ------------------------------------------------
@pytest.mark.slow
def test_slurm_debug_executor_retries_crashes_not_user_errors(cohort, tmp_path):
    home = tmp_path / "home"
    args = ["--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *SHORT, "-E", "slurm", "-X", "cluster=debug",
            "-X", "max_retries=1"]
    code, out, err = finish(start_matrix(home, *args, LOSSBENCH_FAIL_AT_EPOCH="dl-attunet-fold0-seed1:1"))
    assert code == 1 and "1 of 2 cells failed" in err, out[-2000:] + err[-2000:]
    assert "retries exhausted" in " ".join(out.split())
    logs = cell_logs(home)
    assert log_text(logs["dl-attunet-fold0-seed1"]).count(HEADER_PREFIX) == 2  # crashed: retried once
    assert log_text(logs["dl-attunet-fold0-seed0"]).count(HEADER_PREFIX) == 1
    status = {r.data.tags["lossbench.seed"]: r.info.status for r in cell_runs(home)}
    assert status == {"0": "FINISHED", "1": "FAILED"} and len(cell_runs(home)) == 2  # the retry resumed the run

    code, out, err = finish(start_matrix(home, *args, LOSSBENCH_FAIL_AT_EPOCH="bogus"))  # a user error
    assert code == 1 and "LOSSBENCH_FAIL_AT_EPOCH must be EPOCH or CELL:EPOCH" in " ".join(out.split())
    assert log_text(logs["dl-attunet-fold0-seed1"]).count(HEADER_PREFIX) == 1  # not retried


@pytest.mark.slow
def test_slurm_local_executor_requeues_a_preempted_cell_and_resumes_it(cohort, tmp_path):
    home = tmp_path / "home"
    cell = "dl-attunet-fold0-seed0"
    proc = start_matrix(home, "--loss", "dl", "--data", str(cohort), *LONG, "-E", "slurm", "-X", "cluster=local",
                        "-X", "time_min=30", "-X", "cpus_per_task=1")
    text = wait_for_checkpoint(home, cell, proc)
    job_pid = last_pid(text, "pid")  # the submitit job process (the header names it)
    os.kill(job_pid, signal.SIGUSR2)  # what Slurm sends before a time limit or on preemption
    code, out, err = finish(proc)
    assert code == 0, out[-3000:] + err[-3000:]
    text = log_text(cell_logs(home)[cell])
    assert text.count(HEADER_PREFIX) == 2 and "resuming MLflow run" in text, text[-3000:]
    runs = cell_runs(home)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert epochs_logged(home, runs[0].info.run_id) == list(range(12))  # each epoch exactly once
    submitit_log = "\n".join(p.read_text(errors="replace") for p in (home / "matrix").glob("*/submitit/*.out"))
    assert "Requeued job" in submitit_log or "Exiting gracefully after preemption" in submitit_log


def test_the_cell_lock_names_the_host_of_its_holder(tmp_path):
    from filelock import FileLock

    from lossbench.engine import LOCK_FILE, OWNER_FILE, cell_lock

    with FileLock(str(tmp_path / LOCK_FILE), timeout=0):  # held by "another node" sharing the folder
        (tmp_path / OWNER_FILE).write_text("gpu-node-7 4242\n")
        with pytest.raises(LossbenchError, match="already running on host gpu-node-7 in process 4242"):
            with cell_lock(tmp_path):
                pass
    with cell_lock(tmp_path):  # free again: taken, and the owner names this host
        assert (tmp_path / OWNER_FILE).read_text().split() == [os.uname().nodename, str(os.getpid())]


def test_the_local_executor_gives_a_ddp_cell_one_gpu_per_process(monkeypatch, tmp_path):
    """--nproc 2 on 4 GPUs: two cells at once, each with its own two devices; back in the pool when done."""
    from lossbench.errors import LossbenchError
    from lossbench.executors import CellTask
    from lossbench.executors.local import LocalExecutor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    exe = LocalExecutor(jobs=8)
    exe.processes_per_cell(2)
    assert exe.parallelism(5) == 2
    tasks = [CellTask(name=f"c{i}", argv=("lossbench", "--version"), env={}, log=str(tmp_path / f"c{i}.log"))
             for i in range(2)]
    handles = [exe.submit(t) for t in tasks]
    assert [h.gpu for h in handles] == ["0,1", "2,3"] and exe.free == []
    running = list(handles)
    while running:
        finished = [h for h, _ in exe.wait(running, timeout=5)]
        running = [h for h in running if h not in finished]
    assert sorted(exe.free) == ["0", "1", "2", "3"]
    with pytest.raises(LossbenchError, match="--nproc 8: this machine has 4 GPU"):
        LocalExecutor(jobs=1).processes_per_cell(8)

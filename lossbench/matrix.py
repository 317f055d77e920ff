"""A matrix of cells (losses × networks × folds × seeds): expansion, skipping, parallel execution.

Each cell runs as its own ``lossbench run`` process (a crash in one cannot take the others
down), with its complete settings on the command line, so a failed cell can be re-run by hand
with the command the summary prints. Cells already FINISHED in MLflow are skipped without
starting a process; interrupted ones resume (``lossbench run`` does that by itself).

SQLite does not take concurrent writers ("database is locked"), so with ``--jobs`` > 1 and the
embedded store the matrix starts a local ``mlflow server`` on 127.0.0.1 over the same store and
artifact folder, points every cell at it, and stops it by its process id at the end — also when
the matrix fails. A user-given ``--tracking-uri`` server is used as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lossbench import paths
from lossbench.errors import LossbenchError, ParameterError
from lossbench.runconfig import TRAIN_FIELDS, RunConfig

BUDGET_FIELDS = ("dataset", "dataset_params", "preset", *TRAIN_FIELDS)


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ``"1-3,7"`` -> [1, 2, 3, 7]."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            first, last = int(lo), int(hi if sep else lo)
            if first < 0 or last < first:
                raise ValueError
            out.extend(range(first, last + 1))
    except ValueError:
        raise ParameterError(f"{what} expects non-negative numbers and ranges like 0-4 or 0,1,2, got {text!r}") from None
    if not out:
        raise ParameterError(f"{what} is empty")
    return list(dict.fromkeys(out))


def parse_names(text: str, what: str) -> list[str]:
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise ParameterError(f"{what} is empty")
    return names


def scoped_assignments(items: Sequence[str], names: Sequence[str], flag: str) -> dict[str, list[str]]:
    """Split ``name.param=value`` (one component) from ``param=value`` (every component).

    Returns per component name the list of ``param=value`` strings that apply to it.
    """
    per: dict[str, list[str]] = {n: [] for n in names}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(f"{flag} {item!r} must look like name=value or component.name=value")
        scope, dot, param = key.partition(".")
        if dot:
            if scope not in per:
                raise ParameterError(f"{flag} {item!r}: {scope!r} is not one of {', '.join(names)}")
            per[scope].append(f"{param}={value}")
        else:
            for n in names:
                per[n].append(item)
    return per


def budget(config: RunConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in BUDGET_FIELDS}


def check_shared_budget(configs: Sequence[RunConfig]) -> dict[str, Any]:
    """Every cell must share the training budget; only loss, network, fold and seed may differ."""
    first = budget(configs[0])
    for cfg in configs[1:]:
        other = budget(cfg)
        diff = [k for k in BUDGET_FIELDS if other[k] != first[k]]
        if diff:
            raise LossbenchError(
                f"cells {configs[0].name} and {cfg.name} differ in {', '.join(diff)}; a matrix compares losses "
                "under one budget — run separate matrices for different settings"
            )
    return first


def cell_command(cfg: RunConfig, *, experiment: str, tracking_uri: str | None, parent_run_id: str | None,
                 device: str) -> list[str]:
    """The ``lossbench run`` command that reproduces a cell exactly."""

    def fmt(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return ",".join(map(str, value))
        return str(value)

    cmd = ["lossbench", "run", "--loss", cfg.loss, "--net", cfg.network, "--dataset", cfg.dataset,
           "--fold", str(cfg.fold), "--seed", str(cfg.seed), "--preset", cfg.preset, "--device", device,
           "--experiment", experiment]
    for key, value in cfg.loss_params.items():
        cmd += ["-L", f"{key}={fmt(value)}"]
    for key, value in cfg.network_params.items():
        cmd += ["-N", f"{key}={fmt(value)}"]
    for key, value in cfg.dataset_params.items():
        cmd += ["-D", f"{key}={fmt(value)}"]
    for key in TRAIN_FIELDS:
        value = getattr(cfg, key)
        cmd += ["-S", f"{key}={':'.join(map(str, value)) if key == 'pos_neg' else fmt(value)}"]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    return cmd


def matrix_id(identities: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(identities)).encode()).hexdigest()[:16]


# -- the local tracking server -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_tracking_server(backend_uri: str, log_file: Path, timeout: float = 120.0) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``backend_uri``; yields its URL; stopped by pid on exit.

    One worker and no job execution: ~12 s to answer and ~0.5 GB instead of ~29 s and ~3 GB.
    """
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    if not os.path.exists(mlflow):
        raise LossbenchError("the mlflow command is missing from this environment; reinstall lossbench")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    args = [mlflow, "server", "--backend-store-uri", backend_uri, "--default-artifact-root",
            paths.default_artifact_root().as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise LossbenchError(f"the local mlflow server exited with code {proc.returncode}: {tail[0]} "
                                     f"(log: {log_file})")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LossbenchError(f"the local mlflow server did not answer within {timeout:.0f} s (log: {log_file})")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- running the cells ---------------------------------------------------------------------------
@dataclasses.dataclass
class CellJob:
    config: RunConfig
    identity: str
    command: list[str]
    status: str = "pending"  # pending | skipped | running | finished | failed
    run_id: str = ""
    error: str = ""
    log: Path | None = None
    seconds: float = 0.0
    process: subprocess.Popen | None = dataclasses.field(default=None, repr=False)
    started: float = 0.0
    gpu: str | None = None


def gpu_slots() -> list[str]:
    """One entry per visible GPU (as CUDA_VISIBLE_DEVICES values); empty on a CPU machine."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch CUDA: CPU only
        return []


def run_jobs(jobs: Sequence[CellJob], *, max_parallel: int, env: dict[str, str], on_change: Any = None) -> None:
    """Run pending jobs as subprocesses, ``max_parallel`` at a time, one GPU per job where GPUs exist."""
    gpus = gpu_slots()
    free_gpus = list(gpus)
    pending = [j for j in jobs if j.status == "pending"]
    running: list[CellJob] = []
    exe = [sys.executable, "-m", "lossbench"]
    try:
        while pending or running:
            while pending and len(running) < max_parallel and (not gpus or free_gpus):
                job = pending.pop(0)
                job_env = dict(env)
                if gpus:
                    job.gpu = free_gpus.pop(0)
                    job_env["CUDA_VISIBLE_DEVICES"] = job.gpu
                assert job.log is not None
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "wb") as log:
                    job.process = subprocess.Popen(exe + job.command[1:], stdout=log, stderr=subprocess.STDOUT,
                                                   env=job_env, start_new_session=True)
                job.status, job.started = "running", time.monotonic()
                running.append(job)
                if on_change:
                    on_change(job)
            time.sleep(0.5)
            for job in list(running):
                code = job.process.poll() if job.process else None
                if code is None:
                    continue
                running.remove(job)
                job.seconds = time.monotonic() - job.started
                if job.gpu is not None:
                    free_gpus.append(job.gpu)
                if code == 0:
                    job.status = "finished"
                else:
                    job.status = "failed"
                    lines = job.log.read_text(errors="replace").strip().splitlines() if job.log else []
                    errors = [ln for ln in lines if ln.startswith("error:")]
                    job.error = (errors[-1] if errors else (lines[-1] if lines else f"exit code {code}"))[:500]
                if on_change:
                    on_change(job)
    finally:
        for job in running:
            if job.process is not None:
                stop_process_group(job.process)
                job.status, job.error = "failed", "interrupted"

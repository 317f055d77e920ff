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
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench import paths
from lossbench.errors import LossbenchError, ParameterError
from lossbench.runconfig import TRAIN_FIELDS, RunConfig
from lossbench.tracking import stop_process_group

if TYPE_CHECKING:
    from lossbench.registry import Registry

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


def matrix_id(identities: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(identities)).encode()).hexdigest()[:16]


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


# -- the whole matrix ------------------------------------------------------------------------------
@dataclasses.dataclass
class MatrixResult:
    """What :func:`run_matrix` did: every cell with its status and run, and the parent run."""

    matrix_id: str
    jobs: list[CellJob]
    work: Path
    parent_id: str = ""
    dry_run: bool = False
    #: Final metrics per cell run id, read back from the store.
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> list[CellJob]:
        return [j for j in self.jobs if j.status == "failed"]


def run_matrix(
    reg: Registry, *, loss: str, net: str, folds: str, seeds: str, dataset: str | None = None,
    data: str | None = None, preset: str | None = None, train: dict[str, Any] | None = None,
    loss_param: Sequence[str] = (), net_param: Sequence[str] = (), data_param: Sequence[str] = (),
    config: Path | None = None, experiment: str = "lossbench", tracking_uri: str | None = None, jobs: int = 1,
    device: str = "auto", dry_run: bool = False, on_checking: Callable[[int], Any] | None = None,
    on_note: Callable[[str], None] | None = None, on_change: Callable[[CellJob], None] | None = None,
) -> MatrixResult:
    """Expand, check and run a matrix; returns every cell's outcome (the caller prints).

    Every cell is checked (settings and data) before anything runs; cells FINISHED in the store
    are skipped; the others run as ``lossbench run`` processes, ``jobs`` at a time, as children of
    one parent run per matrix (reopened when the same matrix runs again).
    """
    from lossbench.engine import prepare, resolve_device
    from lossbench.settings import build_config, cell_argv
    from lossbench.tracking import KIND_TAG, MATRIX_TAG, Tracker, serve

    note = on_note or (lambda text: None)
    if jobs < 1:
        raise LossbenchError(f"--jobs must be >= 1, got {jobs}")
    resolve_device(device)
    losses = parse_names(loss, "--loss")
    nets = parse_names(net, "--net")
    fold_list = parse_int_list(folds, "--folds")
    seed_list = parse_int_list(seeds, "--seeds")
    for name in losses:
        reg.get("loss", name)
    for name in nets:
        reg.get("network", name)
    loss_items = scoped_assignments(loss_param, losses, "--loss-param")
    net_items = scoped_assignments(net_param, nets, "--net-param")
    configs = [
        build_config(reg, config=config, loss=loss_name, net=network, dataset=dataset, data=data, fold=fold,
                     seed=seed, preset=preset, loss_param=loss_items[loss_name], net_param=net_items[network],
                     data_param=data_param, train=train)
        for network in nets for loss_name in losses for fold in fold_list for seed in seed_list
    ]
    shared = check_shared_budget(configs)
    datasets: dict[str, Any] = {}
    with (on_checking(len(configs)) if on_checking else contextlib.nullcontext()):
        prepared = [prepare(cfg, reg, datasets) for cfg in configs]
    mid = matrix_id([p.identity for p in prepared])
    work = paths.home() / "matrix" / mid

    tracker = Tracker(tracking_uri, experiment)
    job_list = []
    for p in prepared:
        job = CellJob(config=p.config, identity=p.identity, command=[], log=work / f"{p.config.name}.log")
        newest = tracker.latest_cell_run(p.identity)
        if newest is not None and newest.finished:
            job.status, job.run_id = "skipped", newest.id
        job_list.append(job)
    result = MatrixResult(matrix_id=mid, jobs=job_list, work=work, dry_run=dry_run)
    if dry_run:
        return result

    parent = tracker.find_matrix_parent(mid)
    if parent is not None:
        parent_id = parent.id
        tracker.reopen(parent_id)
    else:
        parent_id = tracker.start_run(f"matrix-{mid}", {KIND_TAG: "matrix", MATRIX_TAG: mid})
        tracker.log_params(parent_id, {
            "budget": shared, "losses": losses, "networks": nets, "folds": fold_list, "seeds": seed_list,
            "n_cells": len(job_list),
        })
    result.parent_id = parent_id

    def commands(uri: str | None) -> None:
        for job in job_list:
            job.command = cell_argv(job.config, experiment=experiment, tracking_uri=uri, parent_run_id=parent_id,
                                    device=device)

    commands(tracking_uri)
    for job in job_list:
        if job.status == "skipped":
            tracker.set_parent(job.run_id, parent_id)

    pending = sum(j.status == "pending" for j in job_list)
    parallel = min(jobs, pending)
    note(f"matrix {mid}: {len(job_list)} cells, {len(job_list) - pending} already finished, "
         f"{pending} to run{f', {parallel} at a time' if pending else ''}; logs in {work}")
    env = {**os.environ, "LOSSBENCH_HOME": str(paths.home())}
    env.pop("LOSSBENCH_DEBUG", None)

    # SQLite takes one writer: parallel cells on the embedded store go through a local server.
    use_server = parallel > 1 and tracker.is_sqlite
    try:
        with (serve(tracker.uri, log_file=work / "mlflow-server.log") if use_server
              else contextlib.nullcontext(None)) as server:
            if server is not None:
                note(f"started a local MLflow server at {server.url} for the parallel cells")
                commands(server.url)
            run_jobs(job_list, max_parallel=max(parallel, 1), env=env, on_change=on_change)
    finally:
        commands(tracking_uri)  # the re-run hint points at the user's store, not the stopped server
        for job in job_list:
            if job.status in ("finished", "failed"):
                newest = tracker.latest_cell_run(job.identity)
                if newest is not None:
                    job.run_id = newest.id
        _log_cells(tracker, parent_id, job_list, work)
        failed = result.failed
        tracker.log_metrics(parent_id, {
            "cells_finished": sum(j.status == "finished" for j in job_list),
            "cells_skipped": sum(j.status == "skipped" for j in job_list),
            "cells_failed": len(failed),
        })
        if failed:
            tracker.fail(parent_id, "failed cells: " + ", ".join(j.config.name for j in failed))
        else:
            tracker.finish(parent_id)
    result.metrics = {j.run_id: dict(tracker.run(j.run_id).metrics) for j in job_list if j.run_id}
    return result


def _log_cells(tracker: Any, parent_id: str, jobs: list[CellJob], work: Path) -> None:
    """``cells.json`` on the parent run: every cell of the matrix with its run, also cells that
    were finished before (by another matrix or a single run) and so are not children of this one."""
    from lossbench.fsio import atomic_write

    work.mkdir(parents=True, exist_ok=True)
    rows = [{"cell": j.config.name, "identity": j.identity, "run_id": j.run_id, "status": j.status,
             "loss": j.config.loss, "network": j.config.network, "fold": j.config.fold, "seed": j.config.seed}
            for j in jobs]
    path = work / "cells.json"
    atomic_write(path, json.dumps(rows, indent=2))
    tracker.log_artifacts(parent_id, [path])

"""A matrix of cells (losses × networks × folds × seeds): expansion, skipping, parallel execution.

Each cell runs as its own ``lossbench run`` process (a crash in one cannot take the others
down), with its complete settings on the command line, so a failed cell can be re-run by hand
with the command the summary prints. Cells already FINISHED in MLflow are skipped without
starting a process; interrupted ones resume (``lossbench run`` does that by itself). Where the
processes run is the executor's business (``--executor local|ray|slurm``, :mod:`lossbench.executors`);
the matrix only hands over argvs and reads the runs back from MLflow by identity.

SQLite does not take concurrent writers ("database is locked"), so with ``--jobs`` > 1 and the
embedded store the matrix starts a local ``mlflow server`` on 127.0.0.1 over the same store and
artifact folder, points every cell at it, and stops it by its process id at the end — also when
the matrix fails, and also when it is killed (the server dies with it; a re-run stops a recorded
server that survived). A user-given ``--tracking-uri`` server is used as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench import paths
from lossbench.errors import LossbenchError, ParameterError
from lossbench.runconfig import TRAIN_FIELDS, RunConfig

if TYPE_CHECKING:
    from lossbench.registry import Registry

BUDGET_FIELDS = ("dataset", "dataset_params", "preset", *TRAIN_FIELDS)
#: The record of the local MLflow server of parallel cells, in the matrix's work folder.
SERVER_RECORD = "mlflow-server.json"


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
    status: str = "pending"  # pending | skipped | submitted | running | finished | failed
    run_id: str = ""
    error: str = ""
    log: Path | None = None
    seconds: float = 0.0
    started: float = 0.0
    host: str = ""
    attempt: int = 0


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
    config: Path | None = None, experiment: str = "lossbench", tracking_uri: str | None = None,
    jobs: int | None = None, device: str = "auto", dry_run: bool = False, executor: str | None = None,
    executor_options: Sequence[str] = (), on_checking: Callable[[int], Any] | None = None,
    on_note: Callable[[str], None] | None = None, on_change: Callable[[CellJob], None] | None = None,
) -> MatrixResult:
    """Expand, check and run a matrix; returns every cell's outcome (the caller prints).

    Every cell is checked (settings and data) before anything runs; cells FINISHED in the store
    are skipped; the others are handed as ``lossbench run`` argvs to the executor (``local``
    processes by default, ``jobs`` at a time; see :mod:`lossbench.executors`), as children of one
    parent run per matrix (reopened when the same matrix runs again). Run ids are read back from
    the store by each cell's identity.
    """
    from lossbench.engine import prepare, resolve_device
    from lossbench.executors import build_executor, preflight
    from lossbench.settings import build_config
    from lossbench.tracking import Tracker

    note = on_note or (lambda text: None)
    if jobs is not None and jobs < 1:
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

    with build_executor(reg, executor, executor_options, jobs=jobs, work=work) as exe:
        preflight(exe, tracking_uri=tracker.uri, artifact_location=tracker.artifact_location,
                  shared_fs=getattr(exe, "shared_fs", False))
        _run_cells(tracker, exe, result, shared=shared, losses=losses, nets=nets, folds=fold_list, seeds=seed_list,
                   experiment=experiment, tracking_uri=tracking_uri, device=device, note=note, on_change=on_change)
    result.metrics = {j.run_id: dict(tracker.run(j.run_id).metrics) for j in job_list if j.run_id}
    return result


def _run_cells(tracker: Any, exe: Any, result: MatrixResult, *, shared: dict[str, Any], losses: list[str],
               nets: list[str], folds: list[int], seeds: list[int], experiment: str, tracking_uri: str | None,
               device: str, note: Callable[[str], None], on_change: Callable[[CellJob], None] | None) -> None:
    """The parent run, then every pending cell through the executor ``exe``."""
    from lossbench.executors import CellTask, execute, forwarded_env
    from lossbench.settings import cell_argv
    from lossbench.tracking import KIND_TAG, MATRIX_TAG, serve

    job_list, mid, work = result.jobs, result.matrix_id, result.work
    parent = tracker.find_matrix_parent(mid)
    if parent is not None:
        parent_id = parent.id
        tracker.reopen(parent_id)
    else:
        parent_id = tracker.start_run(f"matrix-{mid}", {KIND_TAG: "matrix", MATRIX_TAG: mid})
        tracker.log_params(parent_id, {
            "budget": shared, "losses": losses, "networks": nets, "folds": folds, "seeds": seeds,
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

    pending = [j for j in job_list if j.status == "pending"]
    if job_list:  # every cell shares the budget, nproc included
        exe.processes_per_cell(job_list[0].config.nproc)
    parallel = exe.parallelism(len(pending))
    note(f"matrix {mid}: {len(job_list)} cells, {len(job_list) - len(pending)} already finished, "
         f"{len(pending)} to run{f' on {exe.describe()}, {parallel} at a time' if pending else ''}; logs in {work}")
    env = forwarded_env(paths.home())
    by_name = {j.config.name: j for j in pending}

    def submitted(task: Any) -> None:
        job = by_name[task.name]
        job.status, job.started = ("submitted" if exe.queues else "running"), time.monotonic()
        if on_change:
            on_change(job)

    # SQLite takes one writer: parallel cells on the embedded store go through a local server
    # (recorded, so that a re-run after a kill -9 of this process stops it if it survived).
    use_server = parallel > 1 and tracker.is_sqlite and not exe.multi_host
    try:
        with (serve(tracker.uri, log_file=work / "mlflow-server.log", record=work / SERVER_RECORD) if use_server
              else contextlib.nullcontext(None)) as server:
            if server is not None:
                if server.stale:
                    note(f"stopped a stale MLflow server (pid {server.stale['pid']}, port {server.stale.get('port')}) "
                         "left by an earlier run")
                note(f"started a local MLflow server at {server.url} for the parallel cells")
                commands(server.url)
                # a server on 127.0.0.1 is up or gone, not flaky: few HTTP retries, so that cells whose
                # matrix (and server) died mark their runs and end in seconds, not minutes of backoff
                env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", **env}
            for job in pending:  # a fresh log per matrix run; the attempts of this run append to it
                assert job.log is not None
                job.log.parent.mkdir(parents=True, exist_ok=True)
                job.log.write_bytes(b"")
            tasks = [CellTask(name=j.config.name, argv=tuple(j.command), env=env, log=str(j.log),
                              gpus=getattr(exe, "gpus_per_cell", 0) or 0) for j in pending]
            for task, outcome in execute(exe, tasks, limit=max(parallel, 1), on_submit=submitted):
                job = by_name[task.name]
                job.status = "finished" if outcome.status == "finished" else "failed"
                job.error = "" if job.status == "finished" else (outcome.error or outcome.status)
                job.seconds = outcome.seconds or (time.monotonic() - job.started)
                job.host, job.attempt = outcome.host, outcome.attempt
                if on_change:
                    on_change(job)
    finally:
        for job in job_list:
            if job.status in ("submitted", "running"):
                job.status, job.error = "failed", "interrupted"
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

"""The body of ``lossbench matrix`` (kept out of the command module so --help stays light)."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
from pathlib import Path
from typing import Any

import typer

from lossbench import paths
from lossbench.errors import LossbenchError


def run_matrix(reg: Any, out: Any, err: Any, *, loss: str, net: str, folds: str, seeds: str, dataset: str | None,
               data: str | None, preset: str | None, train: dict[str, Any],
               loss_param: list[str], net_param: list[str], data_param: list[str], config: Path | None,
               experiment: str, tracking_uri: str | None, jobs: int, device: str, dry_run: bool) -> None:
    from lossbench.cli._run_common import build_config
    from lossbench.engine import prepare, resolve_device
    from lossbench.matrix import (
        CellJob, cell_command, check_shared_budget, local_tracking_server, matrix_id, parse_int_list, parse_names,
        run_jobs, scoped_assignments,
    )
    from lossbench.tracking import KIND_TAG, PARENT_TAG, Tracker

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

    configs = []
    for network in nets:
        for loss_name in losses:
            for fold in fold_list:
                for seed in seed_list:
                    configs.append(build_config(
                        reg, config=config, loss=loss_name, net=network, dataset=dataset, data=data, fold=fold,
                        seed=seed, preset=preset, loss_param=loss_items[loss_name], net_param=net_items[network],
                        data_param=data_param, train=train,
                    ))
    shared = check_shared_budget(configs)
    datasets: dict[str, Any] = {}
    with out.status(f"checking {len(configs)} cells and the data…"):
        prepared = [prepare(cfg, reg, datasets) for cfg in configs]
    mid = matrix_id([p.identity for p in prepared])
    work = paths.home() / "matrix" / mid

    tracker = Tracker(tracking_uri, experiment)
    job_list = []
    for p in prepared:
        job = CellJob(config=p.config, identity=p.identity, command=[], log=work / f"{p.config.name}.log")
        runs = tracker.find_cell_runs(p.identity)
        if runs and runs[0].info.status == "FINISHED":
            job.status, job.run_id = "skipped", runs[0].info.run_id
        job_list.append(job)
    if dry_run:
        _print_cells(out, job_list, title=f"matrix {mid} (dry run)")
        return

    parent = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`lossbench.matrix` = '{mid}'", max_results=1,
        order_by=["attributes.start_time DESC"])
    if parent:
        parent_id = parent[0].info.run_id
        tracker.reopen(parent_id)
    else:
        parent_id = tracker.start_run(f"matrix-{mid}", {KIND_TAG: "matrix", "lossbench.matrix": mid})
        tracker.log_params(parent_id, {
            "budget": shared, "losses": losses, "networks": nets, "folds": fold_list, "seeds": seed_list,
            "n_cells": len(job_list),
        })
    for job in job_list:
        job.command = cell_command(job.config, experiment=experiment, tracking_uri=tracking_uri,
                                   parent_run_id=parent_id, device=device)
        if job.status == "skipped" and PARENT_TAG not in tracker.client.get_run(job.run_id).data.tags:
            tracker.client.set_tag(job.run_id, PARENT_TAG, parent_id)

    pending = sum(j.status == "pending" for j in job_list)
    parallel = min(jobs, pending)
    out.print(f"matrix {mid}: {len(job_list)} cells, {len(job_list) - pending} already finished, "
              f"{pending} to run{f', {parallel} at a time' if pending else ''}; logs in {work}", highlight=False)
    env = {**os.environ, "LOSSBENCH_HOME": str(paths.home())}
    env.pop("LOSSBENCH_DEBUG", None)

    def on_change(job: CellJob) -> None:
        style = {"running": "blue", "finished": "green", "failed": "red"}.get(job.status, "")
        extra = f" after {job.seconds:.0f} s" if job.status in ("finished", "failed") else ""
        out.print(f"[{style}]{job.status}[/] {job.config.name}{extra}" + (f": {job.error}" if job.error else ""),
                  highlight=False)

    # SQLite takes one writer: parallel cells on the embedded store go through a local server.
    use_server = parallel > 1 and tracker.uri.startswith("sqlite:")
    server = local_tracking_server(tracker.uri, work / "mlflow-server.log") if use_server else None
    try:
        with server if server is not None else contextlib.nullcontext(None) as server_uri:
            if server_uri:
                out.print(f"started a local MLflow server at {server_uri} for the parallel cells", highlight=False)
                for job in job_list:
                    job.command = cell_command(job.config, experiment=experiment, tracking_uri=server_uri,
                                               parent_run_id=parent_id, device=device)
            run_jobs(job_list, max_parallel=max(parallel, 1), env=env, on_change=on_change)
    finally:
        for job in job_list:
            if job.status in ("finished", "failed"):
                job.command = cell_command(job.config, experiment=experiment, tracking_uri=tracking_uri,
                                           parent_run_id=parent_id, device=device)
                runs = tracker.find_cell_runs(job.identity)
                if runs:
                    job.run_id = runs[0].info.run_id
        failed = [j for j in job_list if j.status == "failed"]
        _log_cells(tracker, parent_id, job_list, work)
        tracker.log_metrics(parent_id, {
            "cells_finished": sum(j.status == "finished" for j in job_list),
            "cells_skipped": sum(j.status == "skipped" for j in job_list),
            "cells_failed": len(failed),
        })
        if failed:
            tracker.fail(parent_id, "failed cells: " + ", ".join(j.config.name for j in failed))
        else:
            tracker.finish(parent_id)
    summary = {j.run_id: tracker.client.get_run(j.run_id).data.metrics for j in job_list if j.run_id}

    _print_cells(out, job_list, title=f"matrix {mid}: parent run {parent_id}", metrics=summary)
    if failed:
        for job in failed:
            err.print(f"re-run {job.config.name} with: {shlex.join(job.command)}", highlight=False, soft_wrap=True)
        err.print(f"error: {len(failed)} of {len(job_list)} cells failed (logs in {work})", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1)


def _log_cells(tracker: Any, parent_id: str, jobs: list, work: Path) -> None:
    """``cells.json`` on the parent run: every cell of the matrix with its run, also cells that
    were finished before (by another matrix or a single run) and so are not children of this one."""
    import json

    work.mkdir(parents=True, exist_ok=True)
    rows = [{"cell": j.config.name, "identity": j.identity, "run_id": j.run_id, "status": j.status,
             "loss": j.config.loss, "network": j.config.network, "fold": j.config.fold, "seed": j.config.seed}
            for j in jobs]
    path = work / "cells.json"
    path.write_text(json.dumps(rows, indent=2))
    tracker.log_artifacts(parent_id, [path])


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _print_cells(out: Any, jobs: list, title: str, metrics: dict[str, dict] | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("cell", "status", "MLflow run", "test Dice", "F1", "error"):
        table.add_column(col)
    styles = {"finished": "green", "skipped": "cyan", "failed": "red", "pending": "yellow"}
    for job in jobs:
        m = (metrics or {}).get(job.run_id, {})
        table.add_row(job.config.name, f"[{styles.get(job.status, '')}]{job.status}[/]", job.run_id or "—",
                      _fmt(m.get("test_dice_mean")), _fmt(m.get("test_f1_pooled")), job.error)
    out.print(table)

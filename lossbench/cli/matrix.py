"""``lossbench matrix``: every cell of losses × networks × folds × seeds, skipping finished ones."""

from __future__ import annotations

import math
from typing import Any

import typer

from lossbench.cli import _options as opts
from lossbench.cli._common import console, err_console, json_mode, print_json, registry


def matrix(
    loss: opts.Loss = "dl,dfl,l1dfl",
    net: opts.Net = "attunet",
    folds: str = typer.Option("0", "--folds", help="Folds: 0-4 or 0,2."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds: 0,1,2 or 0-2."),
    dataset: opts.Dataset = None,
    data: opts.Data = None,
    preset: opts.Preset = None,
    epochs: opts.Epochs = None,
    patch: opts.Patch = None,
    batch: opts.Batch = None,
    lr: opts.Lr = None,
    val_every: opts.ValEvery = None,
    spacing: opts.Spacing = None,
    setting: opts.Settings = [],
    loss_param: opts.LossParams = [],
    net_param: opts.NetParams = [],
    data_param: opts.DataParams = [],
    config: opts.Config = None,
    experiment: opts.Experiment = "lossbench",
    tracking_uri: opts.TrackingUri = None,
    jobs: int = typer.Option(None, "--jobs", "-j", help="Cells run at once (local default 1, one GPU each; "
                             "ray/slurm: as many as the cluster takes)."),
    device: opts.Device = "auto",
    nproc: opts.Nproc = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the cells and their status; run nothing."),
    executor: str = typer.Option(None, "--executor", "-E", help="Where cells run: local (default), ray, slurm "
                                 "(see `lossbench list executors`)."),
    executor_option: list[str] = typer.Option([], "--executor-option", "-X", metavar="KEY=VALUE",
                                              help="Executor option, e.g. -X address=auto, -X partition=gpu "
                                              "(see `lossbench show executor NAME`)."),
    as_json: opts.Json = False,
) -> None:
    """Run the matrix of cells; finished cells are skipped, interrupted ones resume.

    One MLflow parent run per matrix, one child per cell. A failing cell does not stop the
    others; the exit code is 1 if any cell failed.
    """
    import shlex

    from lossbench.matrix import run_matrix

    _terminate_as_interrupt()
    with json_mode(as_json) as stdout:
        out, err = console(), err_console()

        def on_change(job: Any) -> None:
            style = {"running": "blue", "submitted": "blue", "finished": "green", "failed": "red"}.get(job.status, "")
            extra = f" after {job.seconds:.0f} s" if job.status in ("finished", "failed") else ""
            if job.status in ("finished", "failed") and job.attempt > 1:
                extra += f" ({job.attempt} attempts)"
            out.print(f"[{style}]{job.status}[/] {job.config.name}{extra}" + (f": {job.error}" if job.error else ""),
                      highlight=False)

        result = run_matrix(
            registry(), loss=loss or "", net=net or "", folds=folds, seeds=seeds, dataset=dataset, data=data,
            preset=preset, train=opts.train_settings(setting, epochs=epochs, patch=patch, batch=batch, lr=lr, nproc=nproc,
                                                     val_every=val_every, spacing=spacing),
            loss_param=loss_param, net_param=net_param, data_param=data_param, config=config, experiment=experiment,
            tracking_uri=tracking_uri, jobs=jobs, device=device, dry_run=dry_run, executor=executor,
            executor_options=executor_option,
            on_checking=lambda n: out.status(f"checking {n} cells and the data…"),
            on_note=lambda text: out.print(text, highlight=False), on_change=on_change,
        )
        if as_json:
            print_json(_as_dict(result), stdout)
        elif result.dry_run:
            _print_cells(out, result.jobs, title=f"matrix {result.matrix_id} (dry run)")
        if result.dry_run:
            return
        if not as_json:
            _print_cells(out, result.jobs, title=f"matrix {result.matrix_id}: parent run {result.parent_id}",
                         metrics=result.metrics)
        if result.failed:
            for job in result.failed:
                err.print(f"re-run {job.config.name} with: {shlex.join(job.command)}", highlight=False, soft_wrap=True)
            err.print(f"error: {len(result.failed)} of {len(result.jobs)} cells failed (logs in {result.work})",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def _as_dict(result: Any) -> dict[str, Any]:
    """The matrix for ``--json``: its id, parent run, work folder and every cell."""
    cells = []
    for job in result.jobs:
        m = result.metrics.get(job.run_id, {})
        cfg = job.config
        cells.append({"cell": cfg.name, "loss": cfg.loss, "network": cfg.network, "fold": cfg.fold, "seed": cfg.seed,
                      "status": job.status, "run_id": job.run_id or None, "error": job.error or None,
                      "seconds": job.seconds, "attempts": job.attempt, "metrics": m,
                      "command": list(job.command)})
    return {"matrix_id": result.matrix_id, "parent_run_id": result.parent_id or None, "dry_run": result.dry_run,
            "work": str(result.work), "failed": len(result.failed), "cells": cells}


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a batch scheduler) stops the matrix like Ctrl-C: its cells are cancelled
    (their runs KILLED, resumable) and its local server stopped. A ``kill -9`` runs none of this:
    then the kernel terminates the cells and the server (``PR_SET_PDEATHSIG``)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


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

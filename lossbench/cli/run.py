"""``lossbench run``: train, select, infer, evaluate and log one cell."""

from __future__ import annotations


import typer

from lossbench.cli import _options as opts
from lossbench.cli._common import console, debug, registry
from lossbench.errors import LossbenchError

def run(
    loss: opts.Loss = None,
    net: opts.Net = None,
    dataset: opts.Dataset = None,
    data: opts.Data = None,
    fold: int = typer.Option(None, "--fold", help="Cross-validation fold used for validation (default: 0)."),
    seed: int = typer.Option(None, "--seed", help="Seed of initialisation, crops, augmentation, order (default: 0)."),
    preset: opts.Preset = None,
    epochs: opts.Epochs = None,
    patch: opts.Patch = None,
    batch: opts.Batch = None,
    lr: opts.Lr = None,
    val_every: opts.ValEvery = None,
    spacing: opts.Spacing = None,
    device: opts.Device = "auto",
    setting: opts.Settings = [],
    loss_param: opts.LossParams = [],
    net_param: opts.NetParams = [],
    data_param: opts.DataParams = [],
    config: opts.Config = None,
    experiment: opts.Experiment = "lossbench",
    tracking_uri: opts.TrackingUri = None,
    resume: bool = typer.Option(False, "--resume", help="Continue this cell's interrupted run (re-running does it too)."),
    force: bool = typer.Option(False, "--force", help="Run again even if the cell has a finished run."),
    parent_run_id: str = typer.Option(None, "--parent-run-id", hidden=True, help="MLflow parent run (used by matrix)."),
) -> None:
    """Train and evaluate one cell (loss × network × fold × seed) and log it to MLflow.

    With no options it trains attunet with l1dfl on the synthetic PSMA cohort with the CPU
    preset. Settings come from the preset, then --config, then the command line.
    """
    from lossbench.cli._run_common import print_result, progress_bar, survive_lost_terminal, tune_malloc
    from lossbench.settings import build_config

    malloc_note = tune_malloc()
    _terminate_as_interrupt()
    survive_lost_terminal()
    from lossbench.tracking import check_experiment_name

    check_experiment_name(experiment)
    reg = registry()
    cfg = build_config(
        reg, config=config, loss=loss, net=net, dataset=dataset, data=data, fold=fold, seed=seed, preset=preset,
        loss_param=loss_param, net_param=net_param, data_param=data_param,
        train=opts.train_settings(setting, epochs=epochs, patch=patch, batch=batch, lr=lr, val_every=val_every,
                                  spacing=spacing),
    )
    from lossbench.engine import CellAlreadyFinished, finished_result, prepare, resolve_device, run_cell

    torch_device = resolve_device(device)
    out = console()
    if cfg.preset == "paper" and torch_device.type == "cpu":
        out.print("[yellow]warning:[/] the paper preset (1000 epochs of 128³ patches) is meant for a GPU; on this CPU "
                  "it would take days — use --preset cpu, or --epochs to shorten it", highlight=False)
    with out.status("checking the data and settings…"):
        prepared = prepare(cfg, reg)
    out.print(f"cell [bold]{cfg.name}[/] ({prepared.identity}): {len(prepared.train_ids)} train, "
              f"{len(prepared.val_ids)} validation, {len(prepared.test_ids)} test cases; preset {cfg.preset}",
              highlight=False)
    started: list[str] = []  # the MLflow run, once one exists: what a failure message may say about it

    def on_start(run_id: str, resumed: bool) -> None:
        started.append(run_id)
        progress.console.print(f"{'resuming' if resumed else 'started'} MLflow run {run_id}", highlight=False)

    try:
        with progress_bar(out) as progress:
            result = run_cell(
                prepared, tracking_uri=tracking_uri, experiment=experiment, device=device, resume=resume,
                force=force, progress=progress, extra_params={"malloc": malloc_note}, parent_run_id=parent_run_id,
                on_start=on_start,
            )
    except CellAlreadyFinished as done:
        out.print(f"this cell already has a finished run ({done.run_id}); use --force to run it again",
                  highlight=False)
        result = finished_result(tracking_uri, experiment, done.run_id)
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - say what happened to the run (if any) and how to go on
        if debug():
            raise
        if started:
            raise LossbenchError(
                f"training failed: {type(exc).__name__}: {exc} (MLflow run {started[0]} is marked FAILED; "
                "run the same command again to resume from the last checkpoint, LOSSBENCH_DEBUG=1 for the traceback)"
            ) from exc
        raise LossbenchError(
            f"could not start the run: {type(exc).__name__}: {exc} (no MLflow run was created; "
            "LOSSBENCH_DEBUG=1 for the traceback)"
        ) from exc
    print_result(out, cfg, result)


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a stopping matrix, a batch scheduler) ends the run like Ctrl-C: the MLflow
    run is marked KILLED and the cell's lock released, so re-running resumes it."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)

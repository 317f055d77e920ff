"""``lossbench run``: train, select, infer, evaluate and log one cell."""

from __future__ import annotations


import typer

from lossbench.cli import _options as opts
from lossbench.cli._common import console, json_mode, print_json, registry

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
    nproc: opts.Nproc = None,
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
    as_json: opts.Json = False,
) -> None:
    """Train and evaluate one cell (loss × network × fold × seed) and log it to MLflow.

    With no options it trains attunet with l1dfl on the synthetic PSMA cohort with the CPU
    preset. Settings come from the preset, then --config, then the command line.
    """
    from lossbench import api
    from lossbench.cli._run_common import print_result, progress_bar, survive_lost_terminal, tune_malloc

    malloc_note = tune_malloc()
    _terminate_as_interrupt()
    survive_lost_terminal()
    with json_mode(as_json) as stdout:
        out = console()

        def on_prepared(prepared) -> None:
            cfg = prepared.config
            out.print(f"cell [bold]{cfg.name}[/] ({prepared.identity}): {len(prepared.train_ids)} train, "
                      f"{len(prepared.val_ids)} validation, {len(prepared.test_ids)} test cases; preset {cfg.preset}",
                      highlight=False)
            if cfg.preset == "paper" and _on_cpu(device):
                out.print("[yellow]warning:[/] the paper preset (1000 epochs of 128³ patches) is meant for a GPU; on "
                          "this CPU it would take days — use --preset cpu, or --epochs to shorten it", highlight=False)

        def on_start(run_id: str, resumed: bool) -> None:
            out.print(f"{'resuming' if resumed else 'started'} MLflow run {run_id}", highlight=False)

        with progress_bar(out) as progress:
            result = api.run(
                loss=loss, net=net, dataset=dataset, data=data, fold=fold, seed=seed, preset=preset, epochs=epochs,
                patch=patch, batch=batch, lr=lr, val_every=val_every, spacing=spacing, nproc=nproc, settings=setting,
                loss_params=loss_param, net_params=net_param, data_params=data_param, config=config,
                experiment=experiment, tracking_uri=tracking_uri, device=device, resume=resume, force=force,
                progress=progress, on_prepared=on_prepared, on_start=on_start, extra_params={"malloc": malloc_note},
                parent_run_id=parent_run_id, registry=registry(),
            )
        if result.status == "skipped":
            out.print(f"this cell already has a finished run ({result.run_id}); use --force to run it again",
                      highlight=False)
        print_result(out, result)
    if as_json:
        print_json(result.as_dict(), stdout)


def _on_cpu(device: str) -> bool:
    from lossbench.engine import resolve_device

    return resolve_device(device).type == "cpu"


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a stopping matrix, a batch scheduler) ends the run like Ctrl-C: the MLflow
    run is marked KILLED and the cell's lock released, so re-running resumes it."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)

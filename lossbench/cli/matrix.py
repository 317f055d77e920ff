"""``lossbench matrix``: every cell of losses × networks × folds × seeds, skipping finished ones."""

from __future__ import annotations


import typer

from lossbench.cli import _options as opts
from lossbench.cli._common import console, err_console, registry


def matrix(
    loss: str = typer.Option("dl,dfl,l1dfl", "--loss", help="Losses, comma separated."),
    net: str = typer.Option("attunet", "--net", help="Networks, comma separated."),
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
    loss_param: list[str] = typer.Option(
        [], "--loss-param", "-L", help="Loss parameter: l1dfl.epsilon=0.1 (one loss) or gamma=2 (every loss)."
    ),
    net_param: list[str] = typer.Option(
        [], "--net-param", "-N", help="Network parameter: attunet.channels=8,16,32 or dropout=0 (every network)."
    ),
    data_param: opts.DataParams = [],
    config: opts.Config = None,
    experiment: opts.Experiment = "lossbench",
    tracking_uri: opts.TrackingUri = None,
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at once (one process each; one GPU each)."),
    device: opts.Device = "auto",
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the cells and their status; run nothing."),
) -> None:
    """Run the matrix of cells; finished cells are skipped, interrupted ones resume.

    One MLflow parent run per matrix, one child per cell. A failing cell does not stop the
    others; the exit code is 1 if any cell failed.
    """
    from lossbench.cli._matrix_impl import run_matrix

    run_matrix(
        registry(), console(), err_console(), loss=loss, net=net, folds=folds, seeds=seeds, dataset=dataset,
        data=data, preset=preset, train=opts.train_settings(setting, epochs=epochs, patch=patch, batch=batch, lr=lr,
                                                            val_every=val_every, spacing=spacing),
        loss_param=loss_param, net_param=net_param, data_param=data_param, config=config,
        experiment=experiment, tracking_uri=tracking_uri, jobs=jobs, device=device, dry_run=dry_run,
    )

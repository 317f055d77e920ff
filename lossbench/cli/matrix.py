"""``lossbench matrix``: every cell of losses × networks × folds × seeds, skipping finished ones."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli._common import console, err_console, registry


def matrix(
    loss: str = typer.Option("dl,dfl,l1dfl", "--loss", help="Losses, comma separated."),
    net: str = typer.Option("attunet", "--net", help="Networks, comma separated."),
    folds: str = typer.Option("0", "--folds", help="Folds: 0-4 or 0,2."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds: 0,1,2 or 0-2."),
    dataset: str = typer.Option(None, "--dataset", help="Registry name of the dataset (default: psma)."),
    data: str = typer.Option(None, "--data", help="Data folder (default: the synthetic PSMA cohort)."),
    preset: str = typer.Option(None, "--preset", help="Settings preset shared by every cell: cpu or paper."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (preset's by default)."),
    patch: str = typer.Option(None, "--patch", help="Patch size: 96 or 96,96,64."),
    batch: int = typer.Option(None, "--batch", help="Patches per training step."),
    lr: float = typer.Option(None, "--lr", help="AdamW learning rate."),
    val_every: int = typer.Option(None, "--val-every", help="Validate (and checkpoint) every N epochs."),
    spacing: str = typer.Option(None, "--spacing", help="Resampling spacing in mm."),
    setting: list[str] = typer.Option([], "--set", "-S", help="Training setting name=value, as for run."),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", "-L", help="Loss parameter: l1dfl.epsilon=0.1 (one loss) or gamma=2 (every loss)."
    ),
    net_param: list[str] = typer.Option(
        [], "--net-param", "-N", help="Network parameter: attunet.channels=8,16,32 or dropout=0 (every network)."
    ),
    data_param: list[str] = typer.Option([], "--data-param", "-D", help="Dataset parameter name=value."),
    config: Path = typer.Option(None, "--config", "-c", help="TOML file with [dataset] and [train] for every cell."),
    experiment: str = typer.Option("lossbench", "--experiment", help="MLflow experiment name."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking server (default: embedded)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at once (one process each; one GPU each)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda, for every cell."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the cells and their status; run nothing."),
) -> None:
    """Run the matrix of cells; finished cells are skipped, interrupted ones resume.

    One MLflow parent run per matrix, one child per cell. A failing cell does not stop the
    others; the exit code is 1 if any cell failed.
    """
    from lossbench.cli._matrix_impl import run_matrix

    run_matrix(
        registry(), console(), err_console(), loss=loss, net=net, folds=folds, seeds=seeds, dataset=dataset,
        data=data, preset=preset, train={"epochs": epochs, "patch": patch, "batch": batch, "lr": lr,
                                        "val_every": val_every, "spacing": spacing},
        setting=setting, loss_param=loss_param, net_param=net_param, data_param=data_param, config=config,
        experiment=experiment, tracking_uri=tracking_uri, jobs=jobs, device=device, dry_run=dry_run,
    )

"""Options shared between commands (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lossbench.runconfig import TRAIN_FIELDS

class StrataScheme(str, Enum):
    """How strata edges are chosen (``lossbench evaluate`` and ``lossbench compare``)."""

    fixed = "fixed"
    quantile = "quantile"


Loss = Annotated[Optional[str], typer.Option(
    "--loss", help="Loss registry name, e.g. l1dfl, dl, dfl, dce (matrix: several, comma separated).")]
Net = Annotated[Optional[str], typer.Option(
    "--net", help="Network registry name, e.g. attunet, segresnet (matrix: several, comma separated).")]
LossParams = Annotated[list[str], typer.Option(
    "--loss-param", "-L", help="Loss parameter name=value (repeatable); in a matrix l1dfl.epsilon=0.1 sets it "
    "for one loss only.")]
NetParams = Annotated[list[str], typer.Option(
    "--net-param", "-N", help="Network parameter name=value (repeatable); in a matrix attunet.dropout=0.1 sets it "
    "for one network only.")]
Dataset = Annotated[Optional[str], typer.Option("--dataset", help="Registry name of the dataset (default: psma).")]
Data = Annotated[Optional[str], typer.Option(
    "--data", help="Data folder for the dataset (default: the synthetic PSMA cohort).")]
Preset = Annotated[Optional[str], typer.Option(
    "--preset", help="Settings preset: 'cpu' (a few minutes on 2 cores) or 'paper' (the study's, PAPER.md §5); "
    "default: cpu.")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (preset's by default).")]
Patch = Annotated[Optional[str], typer.Option("--patch", help="Patch size: 96 or 96,96,64 (preset's by default).")]
Batch = Annotated[Optional[int], typer.Option("--batch", help="Patches per training step (preset's by default).")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="AdamW learning rate (preset's by default).")]
ValEvery = Annotated[Optional[int], typer.Option("--val-every", help="Validate (and checkpoint) every N epochs.")]
Spacing = Annotated[Optional[str], typer.Option("--spacing", help="Resampling spacing in mm: 2 or 2,2,3.")]
Settings = Annotated[list[str], typer.Option(
    "--set", "-S", help="Any training setting as name=value (repeatable), e.g. -S sw_batch_size=8; names: "
    + ", ".join(TRAIN_FIELDS) + ".")]
DataParams = Annotated[list[str], typer.Option(
    "--data-param", "-D", help="Dataset parameter name=value (repeatable).")]
Config = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="TOML file with [loss], [network], [dataset] and [train] settings.")]
Experiment = Annotated[str, typer.Option(
    "--experiment", envvar="MLFLOW_EXPERIMENT_NAME",
    help="MLflow experiment name (also the folder mlartifacts/<name>: no '/', '.' or '..').")]
TrackingUri = Annotated[Optional[str], typer.Option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: the SQLite store under $LOSSBENCH_HOME); "
    "credentials: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Nproc = Annotated[Optional[int], typer.Option(
    "--nproc", min=1, help="Processes per cell (PyTorch DDP; one per GPU, gloo on CPU): a step then holds "
    "nproc × batch patches, so nproc is part of the cell's identity (default: 1).")]


def train_settings(settings: list[str], **flags: object) -> dict[str, object]:
    """``--set name=value`` items updated by the dedicated flags that were given."""
    from lossbench.config import parse_assignments

    return {**parse_assignments(settings, "--set"), **{k: v for k, v in flags.items() if v is not None}}

Json = Annotated[bool, typer.Option(
    "--json", help="Print the summary as one JSON document on stdout (progress and notes go to stderr).")]

"""Pieces shared by ``lossbench run`` and ``lossbench matrix``: settings, progress, summary."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULTS = {"loss": "l1dfl", "network": "attunet", "dataset": "psma", "preset": "cpu", "fold": 0, "seed": 0}

#: glibc allocator settings for training (benchmarks/RESULTS.md, "Allocator"): large tensors are
#: taken from and kept in the heap instead of being mmapped and unmapped at every step.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 * 2**30), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}
MALLOC_SWITCH = "LOSSBENCH_MALLOC"  # "0" turns the tuning off


def tune_malloc() -> str:
    """Re-execute the command once with :data:`MALLOC_ENV` set (it only acts at process start).

    Returns a note for the run's params: ``"tuned"``, ``"off"`` or ``"preset by the user"``.
    """
    if os.environ.get(MALLOC_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return "off"
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return "tuned"
    if any(k in os.environ for k in MALLOC_ENV):
        return "preset by the user"
    env = {**os.environ, **MALLOC_ENV}
    script = sys.argv[0]
    if not script or not os.path.exists(script):
        return "off"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)
    return "tuned"  # not reached


def build_config(
    reg: Any,
    *,
    config: Path | None,
    loss: str | None,
    net: str | None,
    dataset: str | None,
    data: str | None,
    fold: int | None,
    seed: int | None,
    preset: str | None,
    loss_param: Sequence[str],
    net_param: Sequence[str],
    data_param: Sequence[str],
    train: Mapping[str, Any],
):
    """Resolve a :class:`lossbench.runconfig.RunConfig` from defaults < config file < command line."""
    from lossbench.config import component_choice, load_config, parse_assignments
    from lossbench.runconfig import resolve_run_config, train_section

    file_cfg = load_config(config) if config else {}
    file_train = train_section(file_cfg)

    def choose(kind: str, cli_name: str | None, items: Sequence[str], flag: str) -> tuple[str, dict[str, Any]]:
        name, overrides = component_choice(file_cfg, kind, cli_name, parse_assignments(items, flag))
        component = reg.get(kind, name or DEFAULTS[kind])
        return component.name, component.resolve(overrides)

    loss_name, loss_params = choose("loss", loss, loss_param, "--loss-param")
    dataset_items = list(data_param) + ([f"data={data}"] if data is not None else [])
    dataset_name, dataset_params = choose("dataset", dataset, dataset_items, "--data-param")
    net_name, _ = choose("network", net, [], "--net-param")
    net_component = reg.get("network", net_name)
    # network parameters: preset defaults < config file < command line, each checked by the component
    _, file_net = component_choice(file_cfg, "network", net_name, {})
    net_overrides = {**file_net, **parse_assignments(net_param, "--net-param")}
    preset_name = preset or file_train.pop("preset", None) or DEFAULTS["preset"]
    fold_value = fold if fold is not None else int(file_train.pop("fold", DEFAULTS["fold"]))
    seed_value = seed if seed is not None else int(file_train.pop("seed", DEFAULTS["seed"]))
    file_train.pop("preset", None)
    file_train.pop("fold", None)
    file_train.pop("seed", None)
    merged_train = {**file_train, **{k: v for k, v in train.items() if v is not None}}
    cfg = resolve_run_config(
        loss=loss_name, loss_params=loss_params, network=net_name, network_params={}, dataset=dataset_name,
        dataset_params=dataset_params, fold=fold_value, seed=seed_value, preset=preset_name, train=merged_train,
    )
    network_params = net_component.resolve({**cfg.network_params, **net_overrides})
    import dataclasses

    return dataclasses.replace(cfg, network_params=network_params)


def progress_bar(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def print_result(console: Any, cfg: Any, result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{cfg.name} ({result.status})", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    s = result.summary
    rows = [
        ("MLflow run", result.run_id),
        ("experiment", result.experiment),
        ("tracking store", result.tracking_uri),
        ("best epoch (validation Dice)", f"{result.best_epoch + 1} ({_fmt(result.best_val_dice)})"),
        ("test Dice, mean", _fmt(s.get("test_dice_mean", float("nan")))),
        ("test F1 (SUVmax criterion), pooled", _fmt(s.get("test_f1_pooled", float("nan")))),
        ("test sensitivity, pooled", _fmt(s.get("test_sensitivity_pooled", float("nan")))),
        ("test FP lesions, total", _fmt(s.get("test_fp_pooled", float("nan")))),
        ("where to look", result.run_url),
    ]
    if result.resumed_from is not None:
        rows.insert(1, ("resumed after epoch", str(result.resumed_from + 1)))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)


"""From what a user asked for to a :class:`lossbench.runconfig.RunConfig`, and back to argv.

Precedence, last wins: the components' defaults < the network's values for the preset < the
preset's training settings < the config file (``--config``) < the command line. The defaults
name the built-in components (the study's cell); :mod:`lossbench.runconfig` itself knows no
component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.config import component_choice, load_config, parse_assignments
from lossbench.runconfig import TRAIN_FIELDS, RunConfig, resolve_run_config, train_section

if TYPE_CHECKING:
    from lossbench.registry import Registry

__all__ = ["DEFAULTS", "build_config", "cell_argv"]

#: What ``lossbench run`` with no options trains: the study's main cell on the synthetic cohort.
DEFAULTS = {"loss": "l1dfl", "network": "attunet", "dataset": "psma", "preset": "cpu", "fold": 0, "seed": 0}


def build_config(
    reg: Registry,
    *,
    config: Path | None = None,
    loss: str | None = None,
    net: str | None = None,
    dataset: str | None = None,
    data: str | None = None,
    fold: int | None = None,
    seed: int | None = None,
    preset: str | None = None,
    loss_param: Sequence[str] = (),
    net_param: Sequence[str] = (),
    data_param: Sequence[str] = (),
    train: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve a :class:`RunConfig` from defaults < preset < config file < command line.

    Component parameters are checked by their component; a network's values for the preset
    (its ``presets[preset]``) come before the file and the command line.
    """
    file_cfg = load_config(config) if config else {}
    unknown = sorted(set(file_cfg) - {"loss", "network", "dataset", "train"})
    if unknown:  # a misspelt table would be silently ignored otherwise
        from lossbench.errors import ConfigError

        raise ConfigError(f"config file {str(config)!r}: unknown table{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(f'[{k}]' for k in unknown)}; a cell's file has [loss], [network], "
                          "[dataset] and [train]")
    file_train = train_section(file_cfg)
    preset_name = preset or file_train.pop("preset", None) or DEFAULTS["preset"]
    fold_value = fold if fold is not None else int(file_train.pop("fold", DEFAULTS["fold"]))
    seed_value = seed if seed is not None else int(file_train.pop("seed", DEFAULTS["seed"]))
    for key in ("preset", "fold", "seed"):
        file_train.pop(key, None)

    def choose(kind: str, cli_name: str | None, items: Sequence[str], flag: str) -> tuple[str, dict[str, Any]]:
        name, overrides = component_choice(file_cfg, kind, cli_name, parse_assignments(items, flag))
        component = reg.get(kind, name or DEFAULTS[kind])
        return component.name, component.resolve(overrides, preset=preset_name)

    loss_name, loss_params = choose("loss", loss, loss_param, "--loss-param")
    dataset_items = list(data_param) + ([f"data={data}"] if data is not None else [])
    dataset_name, dataset_params = choose("dataset", dataset, dataset_items, "--data-param")
    net_name, network_params = choose("network", net, net_param, "--net-param")
    merged_train = {**file_train, **{k: v for k, v in (train or {}).items() if v is not None}}
    return resolve_run_config(
        loss=loss_name, loss_params=loss_params, network=net_name, network_params=network_params,
        dataset=dataset_name, dataset_params=dataset_params, fold=fold_value, seed=seed_value, preset=preset_name,
        train=merged_train,
    )


def _argv_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def cell_argv(cfg: RunConfig, *, experiment: str, tracking_uri: str | None = None,
              parent_run_id: str | None = None, device: str = "auto") -> list[str]:
    """The ``lossbench run`` command line that reproduces ``cfg`` exactly (every setting spelled out).

    The one place a config becomes argv: the matrix runs it, prints it as the re-run hint, and
    executors (local processes, Ray, Slurm) submit it.
    """
    cmd = ["lossbench", "run", "--loss", cfg.loss, "--net", cfg.network, "--dataset", cfg.dataset,
           "--fold", str(cfg.fold), "--seed", str(cfg.seed), "--preset", cfg.preset, "--device", device,
           "--experiment", experiment]
    for flag, params in (("-L", cfg.loss_params), ("-N", cfg.network_params), ("-D", cfg.dataset_params)):
        for key, value in params.items():
            cmd += [flag, f"{key}={_argv_value(value)}"]
    for key in TRAIN_FIELDS:
        value = getattr(cfg, key)
        cmd += ["-S", f"{key}={':'.join(map(str, value)) if key == 'pos_neg' else _argv_value(value)}"]
    if tracking_uri:
        from lossbench.tracking import split_credentials

        # never a password on a command line: the child gets it from MLFLOW_TRACKING_USERNAME/PASSWORD
        cmd += ["--tracking-uri", split_credentials(tracking_uri)[0]]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    return cmd

"""The resolved settings of one cell (loss × network × dataset × fold × seed), and presets.

A :class:`RunConfig` is plain data: every value a run depends on, resolved from the preset,
the config file and the command line (in that order of precedence, last wins). Its
:meth:`RunConfig.identity` hashes what determines the results (not where they are logged), so
re-running the same cell finds, resumes or skips the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, ParameterError

#: Training settings a preset fixes; each can be overridden on the command line or in ``[train]``.
TRAIN_FIELDS = (
    "epochs", "patch", "batch", "lr", "weight_decay", "val_every", "spacing",
    "pos_neg", "sw_batch_size", "overlap", "amp", "affine_prob", "cache_rate",
)

PRESETS: dict[str, dict[str, Any]] = {
    # PAPER.md §4-5: AdamW 2e-4 / 1e-5, cosine over the epochs, batch 4, 128³ patches at 2 mm,
    # pos:neg 4:1, validation every 2 epochs, best validation Dice, mixed precision on CUDA.
    # Batch 4 is the reference's per-GPU batch (it ran 2 GPUs under DDP, 8 patches per step):
    # L1DFL's histogram pools the local batch, so 4 keeps the loss's semantics on one GPU.
    "paper": {
        "epochs": 1000, "patch": (128, 128, 128), "batch": 4, "lr": 2e-4, "weight_decay": 1e-5,
        "val_every": 2, "spacing": (2.0, 2.0, 2.0), "pos_neg": (4.0, 1.0), "sw_batch_size": 4,
        "overlap": 0.25, "amp": True, "affine_prob": 0.5, "cache_rate": 1.0,
        "network_params": {},
    },
    # A few minutes on 2 CPU cores (about 4 for attunet on the default synthetic cohort): 4 mm
    # voxels, 48³ patches, small networks, a larger learning rate for the short schedule.
    "cpu": {
        "epochs": 30, "patch": (48, 48, 48), "batch": 2, "lr": 1e-3, "weight_decay": 1e-5,
        "val_every": 10, "spacing": (4.0, 4.0, 4.0), "pos_neg": (4.0, 1.0), "sw_batch_size": 4,
        "overlap": 0.25, "amp": False, "affine_prob": 0.5, "cache_rate": 1.0,
        "network_params": {
            "attunet": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)},
            "unet": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1},
            "segresnet": {"init_filters": 8, "blocks_down": (1, 1, 2), "blocks_up": (1, 1)},
            "unetr": {"img_size": 48, "feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
        },
    },
}


def _tuple3(value: Any, name: str, kind: type) -> tuple:
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        items = tuple(kind(p) for p in parts)
    except (TypeError, ValueError):
        raise ParameterError(f"--{name.replace('_', '-')} expects numbers like 96 or 96,96,64, got {value!r}") from None
    if len(items) == 1:
        items = items * 3
    if len(items) != 3 or any(i <= 0 for i in items):
        raise ParameterError(f"--{name.replace('_', '-')} needs 1 or 3 positive values, got {value!r}")
    return items


def _coerce_train(name: str, value: Any) -> Any:
    if name == "patch":
        return _tuple3(value, name, int)
    if name == "spacing":
        return _tuple3(value, name, float)
    if name == "pos_neg":
        parts = value.split(":") if isinstance(value, str) else value
        try:
            pos, neg = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise ParameterError(f"pos_neg expects two numbers like 4:1, got {value!r}") from None
        return (pos, neg)
    if name == "amp":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    kinds = {"epochs": int, "batch": int, "val_every": int, "sw_batch_size": int,
             "lr": float, "weight_decay": float, "overlap": float, "affine_prob": float, "cache_rate": float}
    try:
        out = kinds[name](value)
    except KeyError:
        raise ParameterError(f"unknown training setting {name!r}; known: {', '.join(TRAIN_FIELDS)}") from None
    except (TypeError, ValueError):
        raise ParameterError(f"training setting {name!r} expects {kinds[name].__name__}, got {value!r}") from None
    if name in ("epochs", "batch", "val_every", "sw_batch_size") and out < 1:
        raise ParameterError(f"training setting {name!r} must be >= 1, got {out}")
    return out


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one cell depends on. Build with :func:`resolve_run_config`."""

    loss: str
    loss_params: dict[str, Any]
    network: str
    network_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    fold: int
    seed: int
    preset: str
    epochs: int
    patch: tuple[int, int, int]
    batch: int
    lr: float
    weight_decay: float
    val_every: int
    spacing: tuple[float, float, float]
    pos_neg: tuple[float, float]
    sw_batch_size: int
    overlap: float
    amp: bool
    affine_prob: float
    cache_rate: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def science(self) -> dict[str, Any]:
        """What determines the results (everything here; where they are logged is not part of it)."""
        return self.as_dict()

    def identity(self, split_sha256: str, code_version: str) -> str:
        """A short stable hash of the settings, the split plan and the code version."""
        payload = json.dumps({"config": self.science(), "split": split_sha256, "code": code_version},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.loss}-{self.network}-fold{self.fold}-seed{self.seed}"


def resolve_run_config(
    *,
    loss: str,
    loss_params: Mapping[str, Any],
    network: str,
    network_params: Mapping[str, Any],
    dataset: str,
    dataset_params: Mapping[str, Any],
    fold: int,
    seed: int,
    preset: str,
    train: Mapping[str, Any],
) -> RunConfig:
    """Merge ``preset`` < ``train`` settings; component parameters are resolved by the caller."""
    if preset not in PRESETS:
        raise ParameterError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    settings = {k: base[k] for k in TRAIN_FIELDS}
    for key, value in train.items():
        key = key.replace("-", "_")
        if value is None:
            continue
        settings[key] = _coerce_train(key, value)
    settings = {k: _coerce_train(k, v) for k, v in settings.items()}
    if fold < 0:
        raise ParameterError(f"--fold must be >= 0, got {fold}")
    net_defaults = dict(base["network_params"].get(network, {}))
    net_defaults.update(network_params)
    return RunConfig(
        loss=loss, loss_params=dict(loss_params), network=network, network_params=net_defaults,
        dataset=dataset, dataset_params=dict(dataset_params), fold=fold, seed=seed, preset=preset, **settings,
    )


def train_section(config: Mapping[str, Any] | None) -> dict[str, Any]:
    section = dict((config or {}).get("train") or {})
    unknown = [k for k in section if k.replace("-", "_") not in TRAIN_FIELDS + ("preset", "fold", "seed")]
    if unknown:
        raise ConfigError(f"[train] has unknown setting(s) {', '.join(unknown)}; known: {', '.join(TRAIN_FIELDS)}")
    return section


def code_version() -> str:
    """``lossbench <version>`` plus the git commit (and ``-dirty``) when run from a checkout."""
    from lossbench import __version__

    root = Path(__file__).resolve().parents[1]
    commit = "unknown"
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()[:12]
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"{__version__}+{commit}"

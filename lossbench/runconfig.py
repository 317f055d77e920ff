"""The resolved settings of one cell (loss × network × dataset × fold × seed), and presets.

A :class:`RunConfig` is plain data: every value a run depends on, resolved from the preset,
the config file and the command line (in that order of precedence, last wins). Its
:meth:`RunConfig.identity` hashes what determines the results (not where they are logged), so
re-running the same cell finds, resumes or skips the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossbench.components import parse_numbers
from lossbench.errors import ConfigError, ParameterError

#: Training settings a preset fixes; each can be overridden on the command line or in ``[train]``.
TRAIN_FIELDS = (
    "epochs", "patch", "batch", "lr", "weight_decay", "val_every", "spacing",
    "pos_neg", "sw_batch_size", "overlap", "amp", "affine_prob", "cache_rate", "num_samples", "warmup_epochs",
    "amp_dtype", "nproc", "workers", "disk_cache", "channels_last", "compile", "cudnn_benchmark",
)

#: Settings that change how fast a cell runs, not what it computes: logged with the run, left out of
#: its identity (a cell re-run with more loader workers resumes or skips the same run). Loader
#: workers draw every patch from its own ``(seed, epoch, index)`` stream, so their number cannot
#: change a result; channels-last, ``torch.compile`` and cuDNN autotuning change the order of
#: floating-point operations only.
EXECUTION_FIELDS = ("workers", "disk_cache", "channels_last", "compile", "cudnn_benchmark")

#: The choices of the settings that take a word.
AMP_DTYPES = ("float16", "bfloat16")

#: Both presets: one process, loader workers chosen from the device and the cores (``auto``: 0 on a
#: CPU with up to 4 cores, where workers would take cores from the network), preprocessed volumes
#: cached on disk for every cell that shares them, and no speed switch that has not been measured
#: on a GPU (benchmarks/gpu_pipeline.py measures them).
_RUNTIME: dict[str, Any] = {"nproc": 1, "workers": "auto", "disk_cache": True, "channels_last": False,
                            "compile": False, "cudnn_benchmark": False}

PRESETS: dict[str, dict[str, Any]] = {
    # PAPER.md §4-5: AdamW 2e-4 / 1e-5, cosine over the epochs, batch 4, 128³ patches at 2 mm,
    # pos:neg 4:1, validation every 2 epochs, best validation Dice, mixed precision on CUDA.
    # Batch 4 is the reference's per-GPU batch (it ran 2 GPUs under DDP, 8 patches per step):
    # L1DFL's histogram pools the local batch, so 4 keeps the loss's semantics on one GPU.
    "paper": {
        "epochs": 1000, "patch": (128, 128, 128), "batch": 4, "lr": 2e-4, "weight_decay": 1e-5,
        "val_every": 2, "spacing": (2.0, 2.0, 2.0), "pos_neg": (4.0, 1.0), "sw_batch_size": 4,
        "overlap": 0.25, "amp": True, "affine_prob": 0.5, "cache_rate": 1.0, "num_samples": 1,
        "warmup_epochs": 0, "amp_dtype": "float16", **_RUNTIME,
    },
    # A few minutes on 2 CPU cores on the default synthetic cohort: 4 mm voxels, 48³ patches, two
    # patches per volume and step, a larger learning rate after a 2-epoch warm-up, eight validation
    # points to choose the model from, bfloat16 autocast where the CPU has it natively (2.2× the
    # steps per second) and no affine augmentation (a 5-minute run underfits; the affine cost a
    # third of the data time and validation Dice 0.57 → 0.75 at 50 epochs): benchmarks/RESULTS.md,
    # "The default demo". Each network's small CPU size is its own ``presets["cpu"]``, the psma
    # dataset's CT window and PET scaling too.
    "cpu": {
        "epochs": 40, "patch": (48, 48, 48), "batch": 2, "lr": 2e-3, "weight_decay": 1e-5,
        "val_every": 5, "spacing": (4.0, 4.0, 4.0), "pos_neg": (4.0, 1.0), "sw_batch_size": 4,
        "overlap": 0.25, "amp": "auto", "affine_prob": 0.0, "cache_rate": 1.0, "num_samples": 2,
        "warmup_epochs": 2, "amp_dtype": "bfloat16", **_RUNTIME,
    },
}


#: What each training setting accepts (the typed model below enforces it; errors quote this).
ALLOWED: dict[str, str] = {
    "epochs": "an integer >= 1", "batch": "an integer >= 1", "val_every": "an integer >= 1",
    "sw_batch_size": "an integer >= 1", "lr": "a number > 0", "weight_decay": "a number >= 0",
    "overlap": "a number in [0, 1)", "affine_prob": "a number in [0, 1]", "cache_rate": "a number in [0, 1]",
    "amp": ("true, false or auto (mixed precision: CUDA autocasts to amp_dtype, a CPU to bfloat16 only; "
            "auto: on CUDA, and on a CPU with native bfloat16 arithmetic)"), "patch": "1 or 3 positive integers like 96 or 96,96,64",
    "spacing": "1 or 3 positive numbers (mm) like 2 or 2,2,3",
    "pos_neg": "two numbers >= 0, not both 0, like 4:1",
    "num_samples": "an integer >= 1 (patches cropped per volume per step: a step holds batch × num_samples)",
    "warmup_epochs": "an integer >= 0 (linear learning-rate warm-up before the cosine decay)",
    "amp_dtype": "float16 or bfloat16 (the autocast type on CUDA when amp is on; bfloat16 needs no loss scaling)",
    "nproc": "an integer >= 1 (processes of one cell under torchrun, one per GPU; the effective batch is nproc × batch)",
    "workers": "auto or an integer >= 0 (loader processes per training process; 0 loads on the training thread)",
    "disk_cache": "true or false (preprocessed volumes cached on disk for every cell that shares them)",
    "channels_last": "true or false (channels-last 3D memory format for the network and its input)",
    "compile": "true or false (torch.compile the network)",
    "cudnn_benchmark": "true or false (let cuDNN time its convolution algorithms; CUDA only)",
}
_BOOLEANS = ("amp", "disk_cache", "channels_last", "compile", "cudnn_benchmark")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _bad(name: str, value: Any) -> ParameterError:
    return ParameterError(f"training setting {name!r} must be {ALLOWED[name]}, got {value!r}")


def _coerce_train(name: str, value: Any) -> Any:
    """Parse one setting from the command line, a TOML value or a preset (types only; ranges: :func:`_check_train`)."""
    if name not in ALLOWED:
        raise ParameterError(f"unknown training setting {name!r}; known: {', '.join(TRAIN_FIELDS)}")
    if name in ("patch", "spacing"):
        try:
            return parse_numbers(value, int if name == "patch" else float, what=f"--{name}")
        except ParameterError:
            raise _bad(name, value) from None
    if name == "pos_neg":
        parts = value.split(":") if isinstance(value, str) else value
        try:
            pos, neg = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise _bad(name, value) from None
        return (pos, neg)
    if name == "amp_dtype":
        word = str(value).strip().lower()
        word = {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(word, word)
        if word not in AMP_DTYPES:
            raise _bad(name, value)
        return word
    if name == "workers":
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        except (TypeError, ValueError):
            raise _bad(name, value) from None
    if name == "amp" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if name in _BOOLEANS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(name, value)
    kind = float if name in ("lr", "weight_decay", "overlap", "affine_prob", "cache_rate") else int
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ParameterError(f"training setting {name!r} expects {kind.__name__} ({ALLOWED[name]}), "
                             f"got {value!r}") from None


@functools.cache
def _train_model() -> Any:
    """The typed model of the training settings (pydantic, imported on first use: ``--help`` stays fast)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, field_validator

    positive = {"ge": 1}

    class TrainSettings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

        epochs: int = Field(**positive)
        batch: int = Field(**positive)
        val_every: int = Field(**positive)
        sw_batch_size: int = Field(**positive)
        num_samples: int = Field(**positive)
        warmup_epochs: int = Field(ge=0)
        nproc: int = Field(**positive)
        workers: int | Literal["auto"]
        amp_dtype: Literal["float16", "bfloat16"]
        disk_cache: bool
        channels_last: bool
        compile: bool
        cudnn_benchmark: bool
        lr: float = Field(gt=0)
        weight_decay: float = Field(ge=0)
        overlap: float = Field(ge=0, lt=1)
        affine_prob: float = Field(ge=0, le=1)
        cache_rate: float = Field(ge=0, le=1)
        amp: bool | Literal["auto"]
        patch: tuple[int, int, int]
        spacing: tuple[float, float, float]
        pos_neg: tuple[float, float]

        @field_validator("workers")
        @classmethod
        def _workers(cls, value: int | str) -> int | str:
            if value != "auto" and value < 0:
                raise ValueError("must be >= 0")
            return value

        @field_validator("patch", "spacing")
        @classmethod
        def _positive(cls, value: tuple) -> tuple:
            if any(v <= 0 for v in value):
                raise ValueError("must be positive")
            return value

        @field_validator("pos_neg")
        @classmethod
        def _ratio(cls, value: tuple[float, float]) -> tuple[float, float]:
            if min(value) < 0 or sum(value) <= 0 or not all(math.isfinite(v) for v in value):
                raise ValueError("both >= 0 and not both 0")
            return value

    return TrainSettings


def _check_train(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting in range, or one :class:`ParameterError` naming the first bad one and what it accepts."""
    from pydantic import ValidationError

    try:
        checked = _train_model()(**settings).model_dump()
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        raise _bad(name, settings.get(name)) from None
    if checked["warmup_epochs"] >= checked["epochs"]:
        raise ParameterError(f"training setting 'warmup_epochs' ({checked['warmup_epochs']}) must be smaller than "
                             f"epochs ({checked['epochs']})")
    return checked


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
    amp: bool | str
    affine_prob: float
    cache_rate: float
    num_samples: int
    warmup_epochs: int
    amp_dtype: str = "float16"
    nproc: int = 1
    workers: int | str = "auto"
    disk_cache: bool = True
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self, split_sha256: str, code_version: str) -> str:
        """A short stable hash of the settings, the split plan and the code version."""
        settings = {k: v for k, v in self.as_dict().items() if k not in EXECUTION_FIELDS}
        payload = json.dumps({"config": settings, "split": split_sha256, "code": code_version},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """The config :meth:`as_dict` gave (e.g. read back from JSON: lists become tuples again)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"run config: unknown field(s) {', '.join(unknown)}")
        tuples = ("patch", "spacing", "pos_neg")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

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
    """Merge ``preset`` < ``train`` settings; component parameters (the network's preset values
    included) are resolved by the caller (:func:`lossbench.settings.build_config`)."""
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
    explicit = {k.replace("-", "_") for k, v in train.items() if v is not None}
    if "warmup_epochs" not in explicit and settings["warmup_epochs"] >= settings["epochs"]:
        # the preset's warm-up, when fewer epochs are asked for: at most all epochs but the last
        settings["warmup_epochs"] = max(0, settings["epochs"] - 1)
    settings = _check_train(settings)
    if fold < 0:
        raise ParameterError(f"--fold must be >= 0, got {fold}")
    return RunConfig(
        loss=loss, loss_params=dict(loss_params), network=network, network_params=dict(network_params),
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

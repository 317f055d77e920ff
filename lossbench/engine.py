"""Train, select, infer and evaluate one cell; every step logged through :mod:`lossbench.tracking`.

The engine never imports a concrete loss, network or dataset: it asks the registry by name.

Reproducibility: a cell's seed fixes the network's initialisation, and every epoch ``e`` reseeds
torch, numpy, Python's ``random``, the MONAI random transforms and the loader's shuffling from
``(seed, e)``. So an epoch's randomness does not depend on what ran before it, and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.

Resumability: at each validation the full training state (model, optimiser, scheduler, AMP
scaler, RNG states, epoch, best model so far, history) is written atomically to
``$LOSSBENCH_HOME/checkpoints/<cell identity>/state.pt``. Re-running the same cell (or passing
``--resume``) reopens the same MLflow run and continues from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lossbench import paths
from lossbench.errors import LossbenchError
from lossbench.registry import Registry
from lossbench.runconfig import RunConfig, code_version

STATE_FILE = "state.pt"
LOCK_FILE = "lock"
OWNER_FILE = "owner"
BEST_ARTIFACT = "best_model.pt"
#: Per test case, the PET MIP with TP / FN / FP outlines (lossbench.evaluation.pictures).
PICTURES_ARTIFACT = "pictures"


class CellAlreadyFinished(Exception):
    """The cell has a FINISHED run in the tracking store (use ``--force`` to run it again)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


@dataclasses.dataclass
class CellResult:
    run_id: str
    status: str  # finished | skipped
    best_epoch: int
    best_val_dice: float
    summary: dict[str, float]
    tracking_uri: str
    experiment: str
    run_url: str
    resumed_from: int | None = None


@dataclasses.dataclass
class Prepared:
    """Everything checked and resolved before any training starts."""

    config: RunConfig
    registry: Registry
    dataset: Any
    plan: Any
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    identity: str
    code: str


# -- helpers ---------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    from lossbench.fsio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def lr_schedule(optimizer: Any, epochs: int, warmup_epochs: int = 0) -> Any:
    """Cosine decay of the learning rate over the epochs (the reference's schedule), after an
    optional linear warm-up of ``warmup_epochs`` from lr/(warmup+1) to lr. Stepped once per epoch."""
    import torch

    if warmup_epochs <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_epochs + 1), end_factor=1.0,
                                             total_iters=warmup_epochs)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs, eta_min=0.0)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup_epochs])


def epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"lossbench:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LossbenchError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise LossbenchError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): where oneDNN's
    bfloat16 convolutions are faster than float32 ones, not emulated and slower."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without the probes: assume not
        return False


def resolve_precision(amp: bool | str, amp_dtype: str, device: Any) -> str:
    """What the network's forward pass computes in: ``float32``, ``float16`` or ``bfloat16``.

    ``amp=true`` autocasts to ``amp_dtype`` on CUDA; a CPU autocasts to bfloat16 only (float16
    there stays float32: the paper preset's setting means CUDA). ``amp=auto`` is ``true`` on CUDA,
    and on a CPU it is bfloat16 where the CPU has native bfloat16 arithmetic, float32 elsewhere.
    The loss is always computed in float32.
    """
    kind = getattr(device, "type", str(device))
    if amp == "auto":
        if kind == "cuda":
            return amp_dtype
        return "bfloat16" if cpu_has_native_bfloat16() else "float32"
    if not amp:
        return "float32"
    if kind == "cuda":
        return amp_dtype
    return "bfloat16" if amp_dtype == "bfloat16" else "float32"


def autocast(precision: str, device: Any) -> Any:
    """The autocast context for a forward pass in ``precision`` (:func:`resolve_precision`) on ``device``;
    a disabled one for float32."""
    import torch

    low = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    return torch.autocast(getattr(device, "type", str(device)), dtype=low or torch.float32, enabled=low is not None)


@contextlib.contextmanager
def cell_lock(folder: Path) -> Iterator[None]:
    """One process per cell: a second one gets a clear error instead of corrupting the checkpoint.

    An OS lock (``flock`` through :mod:`filelock`) on ``<folder>/lock``: the kernel releases it when
    the holder exits in any way, ``kill -9`` included, so there is no stale lock to guess about and
    no PID that another process could have reused. The lock file itself stays (removing it would
    let two processes lock two different files); ``<folder>/owner`` names the holder's host and
    process for the message (``LOSSBENCH_CHECKPOINTS`` may be a folder shared by many nodes; over
    NFS the lock is the server's, released when the holder's node dies and its lease ends).
    """
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    owner = folder / OWNER_FILE
    handle = FileLock(str(lock), timeout=0)
    try:
        handle.acquire()
    except Timeout:
        try:  # "<host> <pid>" (older lossbench: "<pid>")
            *host, pid = owner.read_text().split()
            where = f" on host {host[0]}" if host and host[0] != socket.gethostname() else ""
            who = f"{where} in process {int(pid)}"
        except (OSError, ValueError):
            who = ""
        raise LossbenchError(f"this cell is already running{who} (lock {lock})") from None
    try:
        owner.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # host too: the folder may be shared
        yield
    finally:
        owner.unlink(missing_ok=True)
        handle.release()


# -- preparation: every check before training ------------------------------------------------
def prepare(config: RunConfig, registry: Registry, datasets: dict[str, Any] | None = None) -> Prepared:
    """Resolve components and data and check that they fit together, without training anything.

    ``datasets`` caches built-and-validated datasets with their split plans across calls (the
    matrix prepares many cells over the same data and validates it once).
    """
    loss_c = registry.get("loss", config.loss)
    net_c = registry.get("network", config.network)
    data_c = registry.get("dataset", config.dataset)
    loss_c.check(config.loss_params)
    net_c.check(config.network_params, patch=config.patch, spatial_dims=3, batch_size=config.batch)
    data_c.check(config.dataset_params)

    key = json.dumps([config.dataset, config.dataset_params], sort_keys=True, default=str)
    if datasets is not None and key in datasets:
        dataset, plan = datasets[key]
    else:
        dataset = data_c.build(config.dataset_params)
        dataset.validate()
        plan = dataset.split_plan()
        if datasets is not None:
            datasets[key] = (dataset, plan)
    if config.fold >= plan.n_folds:
        raise LossbenchError(f"--fold {config.fold} does not exist: the split has folds 0..{plan.n_folds - 1}")
    train_ids, val_ids = plan.fold(config.fold)
    if not train_ids or not val_ids:
        raise LossbenchError(f"fold {config.fold} has {len(train_ids)} training and {len(val_ids)} validation cases")
    dry_build(config, registry, dataset)
    code = code_version()
    return Prepared(
        config=config, registry=registry, dataset=dataset, plan=plan, train_ids=tuple(train_ids),
        val_ids=tuple(val_ids), test_ids=tuple(plan.test), identity=config.identity(plan.sha256, code),
        code=code,
    )


def dry_build(config: RunConfig, registry: Registry, dataset: Any) -> None:
    """Build the loss and the network once and pass a patch through the network, before any run exists.

    The network is built on PyTorch's ``meta`` device: shapes are checked, nothing is computed or
    allocated, so this costs milliseconds even for the paper's 128³ networks. A constructor that
    raises, or a network that cannot take the patch, is one clear error here rather than a FAILED
    run later.
    """
    import torch

    try:
        registry.build("loss", config.loss, config.loss_params)
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor: one line naming it
        raise LossbenchError(f"loss {config.loss!r} cannot be built with {config.loss_params}: "
                             f"{type(exc).__name__}: {exc}") from None
    shape = (1, int(dataset.in_channels), *config.patch)
    try:
        with torch.device("meta"):
            net = registry.build("network", config.network, config.network_params, in_channels=shape[1],
                                 out_channels=int(dataset.num_classes), spatial_dims=3)
            with torch.no_grad():
                out = net.eval()(torch.empty(shape))
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the network rejects the patch or its parameters
        raise LossbenchError(f"network {config.network!r} cannot take a patch of {config.patch} with "
                             f"{config.network_params}: {type(exc).__name__}: {exc}") from None
    expected = (1, int(dataset.num_classes), *config.patch)
    if tuple(out.shape) != expected:
        raise LossbenchError(f"network {config.network!r} maps a {config.patch} patch to {tuple(out.shape)[2:]}, "
                             f"not to the patch itself: choose a patch the network can take")


def run_params(p: Prepared, device: Any, extra: dict[str, Any]) -> dict[str, Any]:
    import monai
    import torch

    registry = p.registry
    params: dict[str, Any] = {"config": p.config.as_dict()}
    for kind, name in (("loss", p.config.loss), ("network", p.config.network), ("dataset", p.config.dataset)):
        c = registry.get(kind, name)
        params[f"{kind}_plugin"] = {"name": c.name, "plugin": c.plugin, "distribution": c.distribution,
                                    "version": c.version}
    params["split"] = {"sha256": p.plan.sha256, "n_train": len(p.train_ids), "n_val": len(p.val_ids),
                       "n_test": len(p.test_ids)}
    params["code"] = {"version": p.code, "python": sys.version.split()[0], "torch": torch.__version__,
                      "monai": monai.__version__}
    params["device"] = str(device)
    params["precision"] = resolve_precision(p.config.amp, p.config.amp_dtype, device)
    params["dataset_info"] = p.dataset.info()
    params.update(extra)
    return params


def _git_commit() -> str | None:
    """The full git commit of the lossbench checkout that runs, or None (an installed wheel)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def standard_tags(p: Prepared) -> dict[str, str]:
    """MLflow's own tags for a cell run: source, user, commit, and a description (``mlflow.note.content``)."""
    import getpass

    c = p.config
    tags = {"mlflow.source.name": "lossbench run", "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(Exception):
        tags["mlflow.user"] = getpass.getuser()
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    patch = "×".join(map(str, c.patch))
    tags["mlflow.note.content"] = (
        f"lossbench cell: loss **{c.loss}** × network **{c.network}**, fold {c.fold}, seed {c.seed}, preset "
        f"{c.preset}; dataset {c.dataset} ({len(p.train_ids)} train / {len(p.val_ids)} validation / "
        f"{len(p.test_ids)} test cases, split {p.plan.sha256[:12]}); {c.epochs} epochs, patch {patch}, "
        f"lr {c.lr:g}. Epochs are counted from 1 (best_epoch); the metric step is the epoch index from 0. "
        f"Artifacts: evaluation/ (per-case and per-lesion tables), pictures/, predictions/, best_model.pt "
        f"(weights and preprocessing, torch.load(weights_only=True)); the MLflow PyTorch model is in the Models "
        f"column (tag lossbench.model_uri). Apply it: lossbench predict --run <this run id>.")
    return tags


def label_on_pet_grid(label: Any, pet: Any) -> Any:
    """The label array on the PET grid, where the study computes every metric.

    A label already on the PET grid is returned as is; one on another grid (a dataset with
    ``label_geometry=resample``) is resampled nearest-neighbour, as the reference pipeline does.
    """
    import numpy as np

    if label.array.shape == pet.array.shape and np.allclose(label.affine, pet.affine, atol=1e-3):
        return label.array
    import nibabel as nib
    from nibabel.processing import resample_from_to

    moved = resample_from_to(nib.Nifti1Image(np.asarray(label.array, dtype=np.float32), label.affine),
                             (pet.array.shape, pet.affine), order=0)
    return np.asarray(moved.dataobj) > 0.5


MODEL_FORMAT = "lossbench-model/2"


def model_card(p: Prepared, best: dict[str, Any]) -> dict[str, Any]:
    """Everything ``lossbench predict`` needs beside the weights, as plain values (``best_model.pt``
    stays loadable with ``torch.load(weights_only=True)``): the network, the channels, the dataset
    and its parameters (its preprocessing), spacing, patch and the sliding-window settings."""
    c = p.config
    return {
        "format": MODEL_FORMAT, "epoch": int(best["epoch"]) + 1, "val_dice": float(best["dice"]),
        "network": c.network, "network_params": {k: _plain(v) for k, v in c.network_params.items()},
        "in_channels": int(p.dataset.in_channels), "out_channels": int(p.dataset.num_classes),
        "loss": c.loss, "dataset": c.dataset,
        "dataset_params": {k: _plain(v) for k, v in c.dataset_params.items()},
        "spacing": [float(x) for x in c.spacing], "patch": [int(x) for x in c.patch],
        "sw_batch_size": int(c.sw_batch_size), "overlap": float(c.overlap),
        "fold": int(c.fold), "seed": int(c.seed), "split_sha256": p.plan.sha256,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


# -- the training loop -----------------------------------------------------------------------
class Cell:
    """One cell's training, validation, inference and evaluation."""

    def __init__(self, prepared: Prepared, tracker: Any, device: Any, *, progress: Any = None,
                 fail_at_epoch: int | None = None, group: Any = None) -> None:
        from lossbench.distributed import SINGLE

        self.prepared = prepared
        self.config = prepared.config
        self.tracker = tracker  # None on the ranks other than 0 of a DDP cell: they log nothing
        self.device = device
        self.group = group if group is not None else SINGLE
        self.main = self.group.is_main
        self.progress = progress if self.main else None
        self.fail_at_epoch = fail_at_epoch
        self.folder = paths.checkpoints_dir() / prepared.identity
        self.timings = {"data": 0.0, "compute": 0.0, "validation": 0.0, "logging": 0.0, "checkpoint": 0.0,
                        "test": 0.0}
        self.counts = {"steps": 0, "validated_cases": 0}

    # building blocks -----------------------------------------------------------------------
    def _build(self) -> None:
        import torch

        reg = self.prepared.registry
        c = self.config
        seed_everything(c.seed)
        self.net = reg.build("network", c.network, c.network_params,
                             in_channels=self.prepared.dataset.in_channels, out_channels=self.prepared.dataset.num_classes,
                             spatial_dims=3).to(self.device)
        if c.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        if self.device.type == "cuda" and c.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.model = self.net  # what training calls: DDP's wrapper and/or torch.compile's around the network
        if self.group.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        if c.compile:
            self.model = torch.compile(self.model)
        self.loss = reg.build("loss", c.loss, c.loss_params).to(self.device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = lr_schedule(self.optimizer, c.epochs, c.warmup_epochs)
        self.precision = resolve_precision(c.amp, c.amp_dtype, self.device)
        # bfloat16 has float32's range: no loss scaling (the scaler is then a pass-through)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "float16")

    def _data(self) -> None:
        from lossbench.loading import CellDataset, EpochSampler, resolve_workers, train_loader

        ds = self.prepared.dataset
        c = self.config
        train_tf = ds.transforms("train", patch=c.patch, spacing=c.spacing, pos_neg=c.pos_neg,
                                 affine_prob=c.affine_prob, num_samples=c.num_samples)
        val_tf = ds.transforms("val", spacing=c.spacing)
        # validation is sharded: rank r of w validates every w-th case, and the Dice sums are all-reduced
        val_ids = self.prepared.val_ids[self.group.rank::self.group.world]
        self.train_ds = CellDataset(ds.data_dicts(ds.cases_by_id(self.prepared.train_ids)), train_tf,
                                    seed=c.seed, cache_rate=c.cache_rate, store=self._store("train"))
        self.val_ds = CellDataset(ds.data_dicts(ds.cases_by_id(val_ids)), val_tf, seed=c.seed,
                                  cache_rate=c.cache_rate, store=self._store("val"))
        self.workers = resolve_workers(c.workers, self.device.type, c.nproc)
        self.sampler = EpochSampler(len(self.train_ds), c.seed, rank=self.group.rank, world=self.group.world)
        self.loader = train_loader(self.train_ds, self.sampler, batch_size=c.batch, workers=self.workers,
                                   pin_memory=self.device.type == "cuda")

    def _store(self, stage: str) -> Any:
        """The disk store of this stage's preprocessed cases (``disk_cache``), shared by every cell with
        the same dataset, parameters, spacing and code."""
        if not self.config.disk_cache:
            return None
        import monai
        import torch

        from lossbench.loading import PreprocessedStore

        c = self.config
        return PreprocessedStore(paths.cache_dir() / "preprocessed", {
            "dataset": c.dataset, "dataset_params": c.dataset_params, "stage": stage, "spacing": c.spacing,
            "code": self.prepared.code, "monai": monai.__version__, "torch": torch.__version__})

    def _loader(self, epoch: int) -> Any:
        # the network's randomness (dropout) from (seed, epoch); the patches' from (seed, epoch, case)
        seed_everything(epoch_seed(self.config.seed, epoch))
        self.sampler.set_epoch(epoch)
        return self.loader

    def _infer(self, image: Any) -> Any:
        import torch
        from monai.inferers import sliding_window_inference

        with torch.no_grad(), autocast(self.precision, self.device):
            return sliding_window_inference(
                image.to(self.device), roi_size=self.config.patch, sw_batch_size=self.config.sw_batch_size,
                predictor=self.net, overlap=self.config.overlap, mode="constant",
            ).float()

    # state ---------------------------------------------------------------------------------
    def _state(self, epoch: int, best: dict[str, Any], history: list[dict[str, float]], run_id: str) -> dict:
        return {
            # No RNG states: every epoch reseeds from (seed, epoch), so a resumed run needs none, and
            # the file stays loadable with torch.load(weights_only=True) (tensors and plain values only).
            "format": "lossbench-state/2",
            "identity": self.prepared.identity,
            "run_id": run_id,
            "epoch": epoch,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": best,
            "history": history,
        }

    def load_state(self) -> dict | None:
        import torch

        from lossbench.fsio import remove_stale_temps

        remove_stale_temps(self.folder, STATE_FILE)  # left by a process killed while writing it
        path = self.folder / STATE_FILE
        if not path.exists():
            return None
        import warnings

        try:
            # weights_only: a crafted file cannot run code; only tensors and plain values load.
            with warnings.catch_warnings():  # torch warns about foreign pickles: the error below says it
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn, foreign or crafted file: say so, run nothing from it
            import pickle

            if isinstance(exc, pickle.UnpicklingError):  # torch's many-line advice: say it in our words
                first = "it holds objects other than tensors and plain values: a foreign or crafted file"
            else:  # a torn or truncated file
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LossbenchError(f"checkpoint {path} cannot be read safely ({first}); delete it or run with "
                                 "--force") from None
        if not isinstance(state, dict) or state.get("format") != "lossbench-state/2":
            raise LossbenchError(f"checkpoint {path} is not a lossbench state file of this version; delete it or "
                                 "run with --force")
        if state.get("identity") != self.prepared.identity:
            return None
        return state

    # the run -------------------------------------------------------------------------------
    def run(self, run_id: str, state: dict | None) -> CellResult:
        self._build()
        self._data()
        start_epoch = 0
        best = {"epoch": -1, "dice": -math.inf, "model": None}
        history: list[dict[str, float]] = []
        resumed_from = None
        if state is not None:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            best, history = state["best"], state["history"]
            start_epoch = state["epoch"] + 1
            resumed_from = state["epoch"]
            if self.main:
                self._log_unlogged_epochs(run_id, history)

        # An epoch's metrics go to MLflow only after the checkpoint that contains it is written:
        # a kill before the checkpoint re-runs the epoch and logs it then, a kill after it is made
        # good by _log_unlogged_epochs at the next start. So each epoch is logged exactly once.
        pending: list[tuple[int, dict[str, float]]] = []

        epochs_task = self._task("epochs", total=self.config.epochs, completed=start_epoch)
        for epoch in range(start_epoch, self.config.epochs):
            if self.fail_at_epoch is not None and epoch == self.fail_at_epoch:
                raise RuntimeError(f"injected failure at epoch {epoch} ({FAIL_ENV})")
            t_epoch = time.perf_counter()
            metrics = self._train_epoch(epoch)
            self.scheduler.step()
            last = epoch == self.config.epochs - 1
            if (epoch + 1) % self.config.val_every == 0 or last:
                t0 = time.perf_counter()
                dice = self._validate()
                self.timings["validation"] += time.perf_counter() - t0
                metrics["val_dice"] = dice
                if not math.isnan(dice) and dice > best["dice"]:
                    best = {"epoch": epoch, "dice": dice,
                            "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}
                metrics["val_dice_best"] = best["dice"] if best["epoch"] >= 0 else float("nan")
            metrics["epoch_seconds"] = time.perf_counter() - t_epoch
            history.append({"epoch": epoch, **metrics})
            pending.append((epoch, metrics))
            if "val_dice" in metrics and self.main:  # rank 0 alone writes checkpoints and talks to MLflow
                t0 = time.perf_counter()
                atomic_torch_save(self._state(epoch, best, history, run_id), self.folder / STATE_FILE)
                self.timings["checkpoint"] += time.perf_counter() - t0
                kill_point(f"after-checkpoint:{epoch}")
                t0 = time.perf_counter()
                for step, values in pending:
                    self.tracker.log_metrics(run_id, values, step=step)
                pending.clear()
                self.timings["logging"] += time.perf_counter() - t0
                self._say(f"epoch {epoch + 1}/{self.config.epochs}: train loss {metrics['train_loss']:.4f}, "
                          f"validation Dice {metrics['val_dice']:.4f} (best {metrics['val_dice_best']:.4f}), "
                          f"checkpoint saved")
            self._advance(epochs_task)
        self._remove(epochs_task)
        if not self.main:  # the other ranks of a DDP cell are done: rank 0 alone tests and logs
            return None

        if best["model"] is None:  # no validation case had a lesion: keep the last model
            best = {"epoch": self.config.epochs - 1, "dice": float("nan"),
                    "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}
        self.net.load_state_dict(best["model"])
        kill_point("before-test")
        t0 = time.perf_counter()
        summary = self._test_and_log(run_id, best)
        self.timings["test"] += time.perf_counter() - t0
        summary.update(self._cost_metrics())
        # log_metrics_once: a re-run after a kill that came after this line logs nothing twice
        self.tracker.log_metrics_once(run_id, summary, step=self.config.epochs)
        return CellResult(
            run_id=run_id, status="finished", best_epoch=best["epoch"], best_val_dice=best["dice"], summary=summary,
            tracking_uri=self.tracker.shown_uri, experiment=self.tracker.experiment,
            run_url=self.tracker.run_url(run_id), resumed_from=resumed_from,
        )

    def _cost_metrics(self) -> dict[str, float]:
        """Where the cell's time went (seconds per part, summed over the epochs this process ran), the
        optimiser steps and validated cases behind them, the loader workers and, on CUDA, the peak memory."""
        import torch

        out = {f"time_{k}_seconds": v for k, v in self.timings.items()}
        out["steps"] = float(self.counts["steps"])
        out["loader_workers"] = float(self.workers)
        stores = [d.store for d in (self.train_ds, self.val_ds) if d.store is not None]
        if stores:  # preprocessed cases read from the disk cache, and computed (then stored) by this cell
            out["preprocessed_cases_read"] = float(sum(s.hits for s in stores))
            out["preprocessed_cases_computed"] = float(sum(s.misses for s in stores))
        if self.counts["validated_cases"]:
            out["time_validation_seconds_per_case"] = self.timings["validation"] / self.counts["validated_cases"]
        if self.device.type == "cuda":
            out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out

    def _log_unlogged_epochs(self, run_id: str, history: list[dict[str, float]]) -> None:
        """Log the checkpointed epochs that MLflow lacks (the process was killed between writing the
        checkpoint and logging them); epochs already logged are left alone."""
        keys = sorted({k for entry in history for k in entry if k != "epoch"})
        logged = self.tracker.logged_steps(run_id, keys)
        for entry in history:
            step = int(entry["epoch"])
            missing = {k: v for k, v in entry.items() if k != "epoch" and step not in logged.get(k, ())}
            if missing:
                self.tracker.log_metrics(run_id, missing, step=step)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        import torch

        self.net.train()
        loader = self._loader(epoch)
        task = self._task(f"epoch {epoch + 1}/{self.config.epochs}", total=len(loader))
        losses = []
        pinned = self.device.type == "cuda"
        t_data = time.perf_counter()
        for batch in loader:
            image = batch[self.prepared.dataset.image_key].to(self.device, non_blocking=pinned)
            label = batch[self.prepared.dataset.label_key].to(self.device, non_blocking=pinned).long()
            if self.config.channels_last:
                image = image.contiguous(memory_format=torch.channels_last_3d)
            t_compute = time.perf_counter()
            self.timings["data"] += t_compute - t_data
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.precision, self.device):
                logits = self.model(image)
            value = self.loss(logits.float(), label)
            if not torch.isfinite(value):
                raise LossbenchError(
                    f"loss {self.config.loss} became {value.item()} at epoch {epoch}; lower --lr or check the loss parameters"
                )
            self.scaler.scale(value).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(value.item())
            self.counts["steps"] += 1
            t_data = time.perf_counter()
            self.timings["compute"] += t_data - t_compute
            self._advance(task)
        self._remove(task)
        # the mean over every rank's steps (one all-reduce per epoch; a single process: its own mean)
        total, steps = self.group.all_sum([sum(losses), float(len(losses))])
        return {"train_loss": total / max(steps, 1.0), "lr": self.optimizer.param_groups[0]["lr"]}

    def _validate(self) -> float:
        """Mean Dice over the validation cases with a lesion (MONAI's DiceMetric, ``ignore_empty``); under
        DDP each rank validates its share and the sums are all-reduced, so every rank gets the same value."""
        import torch
        from monai.metrics import DiceMetric
        from monai.networks import one_hot

        self.net.eval()
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
        task = self._task("validation", total=len(self.val_ds))
        total, counted = 0.0, 0.0
        for index in range(len(self.val_ds)):
            item = self.val_ds[index]
            image = item[self.prepared.dataset.image_key][None]
            label = torch.as_tensor(item[self.prepared.dataset.label_key])[None].long()
            logits = self._infer(image).cpu()
            pred = one_hot(torch.argmax(logits, dim=1, keepdim=True), num_classes=logits.shape[1])
            values = metric(y_pred=pred, y=one_hot(label, num_classes=logits.shape[1]))
            finite = values[torch.isfinite(values)]
            if finite.numel():  # MONAI's "mean": over the classes with a lesion, then over the cases
                total += float(finite.mean())
                counted += 1.0
            self.counts["validated_cases"] += 1
            self._advance(task)
        self._remove(task)
        total, counted = self.group.all_sum([total, counted])
        self.net.train()
        return total / counted if counted else float("nan")

    def _test_and_log(self, run_id: str, best: dict[str, Any]) -> dict[str, float]:
        import nibabel as nib
        import numpy as np
        import pandas as pd

        from lossbench.evaluation import evaluate_case, stratify, summarize
        from lossbench.evaluation.io import read_image
        from lossbench.evaluation.pictures import mip_png

        ds = self.prepared.dataset
        self.net.eval()
        infer_tf = ds.transforms("infer", spacing=self.config.spacing)
        cases = ds.cases_by_id(self.prepared.test_ids)
        out_dir = Path(tempfile.mkdtemp(prefix="lossbench-eval-"))
        try:
            pred_dir = out_dir / "predictions"
            pred_dir.mkdir()
            pictures_dir = out_dir / "pictures"
            pictures_dir.mkdir()
            case_rows, lesion_rows = [], []
            task = self._task("test inference", total=len(cases))
            for case, item_dict in zip(cases, ds.data_dicts(cases)):
                item = infer_tf(item_dict)
                logits = self._infer(item[ds.image_key][None])[0].cpu()
                mask = ds.prediction_to_original(item, logits, infer_tf)
                pet = read_image(case.pet, kind="pet")
                gt = label_on_pet_grid(read_image(case.label), pet)
                if mask.shape != pet.array.shape:
                    raise LossbenchError(
                        f"case {case.id}: prediction shape {mask.shape} does not match the PET {pet.array.shape}"
                    )
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), pet.affine), str(pred_dir / f"{case.id}.nii.gz"))
                result = evaluate_case(mask, gt, pet.array, pet.spacing, case_id=case.id)
                (pictures_dir / f"{case.id}.png").write_bytes(mip_png(
                    pet.array, gt, mask, pet.affine,
                    title=f"{case.id}: {self.config.loss} × {self.config.network}, Dice {result.case['dice']:.2f}"))
                case_rows.append(result.case)
                lesion_rows.extend(result.lesions)
                self._advance(task)
            self._remove(task)
            cases_df = stratify(pd.DataFrame(case_rows))
            cases_df["run_id"] = run_id  # last: a reviewer reads case, Dice, F1, TP/FP/FN first
            lesions_df = pd.DataFrame(lesion_rows)
            summary_df = summarize(cases_df)
            eval_dir = out_dir / "evaluation"
            eval_dir.mkdir()
            cases_df.to_csv(eval_dir / "cases.csv", index=False)
            lesions_df.to_csv(eval_dir / "lesions.csv", index=False)
            summary_df.to_csv(eval_dir / "summary.csv")
            (out_dir / "config.json").write_text(json.dumps(self.config.as_dict(), indent=2, default=str))
            model_path = out_dir / BEST_ARTIFACT
            import torch

            preprocessing = model_card(self.prepared, best)
            torch.save({"model": best["model"], **preprocessing}, model_path)
            (out_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2, default=str))
            splits = out_dir / "splits.json"
            self.prepared.plan.write(splits)
            self._log_model(run_id, preprocessing, [out_dir / "config.json", out_dir / "preprocessing.json"])
            self.tracker.log_dataset(
                run_id, name=f"{self.config.dataset}", digest=self.prepared.plan.sha256,
                source=str(getattr(ds, "root", "") or self.config.dataset_params.get("data", "") or "synthetic"),
                profile={"n_train": len(self.prepared.train_ids), "n_val": len(self.prepared.val_ids),
                         "n_test": len(self.prepared.test_ids), "fold": self.config.fold,
                         "split_sha256": self.prepared.plan.sha256})
            self.tracker.log_artifacts(run_id, [eval_dir / "cases.csv", eval_dir / "lesions.csv",
                                                eval_dir / "summary.csv"], "evaluation")
            self.tracker.log_artifacts(run_id, sorted(pred_dir.iterdir()), "predictions")
            self.tracker.log_artifacts(run_id, sorted(pictures_dir.iterdir()), PICTURES_ARTIFACT)
            self.tracker.log_artifacts(run_id, [out_dir / "config.json", model_path, splits])
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

        # best_epoch counts from 1, as the CLI says "best epoch 3" (the metric step is the epoch index, from 0)
        summary = {"best_epoch": float(best["epoch"]) + 1, "best_val_dice": float(best["dice"])}
        for metric, row in summary_df.iterrows():
            for stat in ("mean", "median", "pooled"):
                value = row.get(stat)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    summary[f"test_{metric}_{stat}"] = float(value)
        return summary

    def _log_model(self, run_id: str, preprocessing: dict[str, Any], files: list[Path]) -> None:
        """The best model as an MLflow PyTorch model (``model/``): the UI's Models column and ``mlflow
        models`` work. A network MLflow cannot save is a tag, not a failed run: ``lossbench predict``
        reads ``best_model.pt``."""
        import copy

        import monai
        import torch

        from lossbench import __version__

        if self.tracker.run(run_id).tags.get("lossbench.model_uri"):
            return  # a run resumed after its model was logged (killed before it finished): one model per run
        try:
            net = copy.deepcopy(self.net).cpu().eval()
            uri = self.tracker.log_pytorch_model(
                run_id, net, metadata={"lossbench": preprocessing}, extra_files=files,
                pip_requirements=[f"lossbench=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
                                  f"monai=={monai.__version__}"])
            self.tracker.set_tags(run_id, {"lossbench.model_uri": uri})
        except Exception as exc:  # noqa: BLE001 - a plugin network MLflow cannot pickle
            self.tracker.set_tags(run_id, {"lossbench.model_error": f"{type(exc).__name__}: {exc}"})

    # progress ------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        """A lasting line above the progress bars (and the only progress shown when not on a terminal)."""
        if self.progress is not None:
            self.progress.console.print(line, highlight=False)

    def _task(self, description: str, total: int, completed: int = 0) -> Any:
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, completed=completed)

    def _advance(self, task: Any) -> None:
        if task is not None:
            self.progress.advance(task)

    def _remove(self, task: Any) -> None:
        if task is not None:
            self.progress.remove_task(task)


# -- the entry point used by the CLI (and the matrix) ----------------------------------------
FAIL_ENV = "LOSSBENCH_FAIL_AT_EPOCH"


def injected_failure_epoch(cell_name: str) -> int | None:
    """Test hook: ``LOSSBENCH_FAIL_AT_EPOCH=E`` (every cell) or ``=CELL:E`` (one cell) makes
    training raise at the start of epoch E, to exercise FAILED runs and resumption for real."""
    value = os.environ.get(FAIL_ENV, "").strip()
    if not value:
        return None
    target, sep, epoch = value.rpartition(":")
    if sep and target != cell_name:
        return None
    try:
        return int(epoch)
    except ValueError:
        raise LossbenchError(f"{FAIL_ENV} must be EPOCH or CELL:EPOCH, got {value!r}") from None

KILL_ENV = "LOSSBENCH_KILL_AT"


def kill_point(where: str) -> None:
    """Test hook: ``LOSSBENCH_KILL_AT=after-create-run``, ``after-checkpoint:E``, ``before-test`` or
    ``before-finish`` makes the process ``kill -9`` itself there, the worst moments for a crash."""
    if os.environ.get(KILL_ENV, "").strip() == where:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def run_cell(
    prepared: Prepared,
    *,
    tracking_uri: str | None,
    experiment: str,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    parent_run_id: str | None = None,
    progress: Any = None,
    extra_params: dict[str, Any] | None = None,
    on_start: Callable[[str, bool], None] | None = None,
    group: Any = None,
) -> CellResult:
    """Train and evaluate one prepared cell, logging to MLflow; resume or skip as the store says.

    ``group`` is rank 0's :class:`lossbench.distributed.Group` in a DDP cell: once the run and the
    checkpoint to resume from are settled, the other ranks are told (and start training with it).
    """
    from lossbench.tracking import CELL_TAG, KIND_TAG, Tracker, check_experiment_name

    torch_device = resolve_device(device)
    check_experiment_name(experiment)
    paths.ensure_home()
    fail_at = injected_failure_epoch(prepared.config.name)
    folder = paths.checkpoints_dir() / prepared.identity
    # the lock first: a second process of this cell stops here, before it touches the store
    with cell_lock(folder):
        tracker = Tracker(tracking_uri, experiment)
        cell = Cell(prepared, tracker, torch_device if group is None else group.device, progress=progress,
                    fail_at_epoch=fail_at, group=group)
        newest = tracker.latest_cell_run(prepared.identity)
        if newest is not None and newest.finished and not force:
            raise CellAlreadyFinished(newest.id)
        state = None if force else cell.load_state()
        resumable = (newest is not None and not newest.finished
                     and (state is None or state.get("run_id") == newest.id))
        if resume and not resumable:
            raise LossbenchError("--resume: this cell has no interrupted run to continue; run it without --resume")
        params = None
        if resumable and not force:
            run_id = newest.id
            tracker.reopen(run_id)
            if not newest.params.get("split.sha256"):  # killed between creating the run and its params
                params = run_params(prepared, torch_device, extra_params or {})
        else:
            if force:
                (cell.folder / STATE_FILE).unlink(missing_ok=True)
                if newest is not None and newest.status in ("RUNNING", "SCHEDULED"):
                    tracker.kill(newest.id)  # superseded
            state = None
            tags = {CELL_TAG: prepared.identity, KIND_TAG: "cell", "lossbench.loss": prepared.config.loss,
                    "lossbench.network": prepared.config.network, "lossbench.fold": str(prepared.config.fold),
                    "lossbench.seed": str(prepared.config.seed), "lossbench.preset": prepared.config.preset,
                    **standard_tags(prepared)}
            params = run_params(prepared, torch_device, extra_params or {})  # before the run: nothing to fail
            run_id = tracker.start_run(prepared.config.name, tags, parent_run_id=parent_run_id)
            kill_point("after-create-run")
        try:
            if params is not None:
                tracker.log_params(run_id, params)  # only the params the run lacks
            if on_start is not None:
                on_start(run_id, state is not None)
            if group is not None:
                group.announce({"run_id": run_id, "resume_epoch": None if state is None else int(state["epoch"])})
            result = cell.run(run_id, state)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                tracker.kill(run_id)
            else:
                tracker.fail(run_id, message + "\n" + traceback.format_exc(limit=8))
            raise
        kill_point("before-finish")  # everything logged, the run not yet FINISHED
        tracker.finish(run_id)
        (cell.folder / STATE_FILE).unlink(missing_ok=True)
        return result


def finished_result(tracking_uri: str | None, experiment: str, run_id: str) -> CellResult:
    """The summary of an already finished run, read back from MLflow."""
    from lossbench.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment)
    metrics = dict(tracker.run(run_id).metrics)
    return CellResult(
        # the metric counts from 1, CellResult.best_epoch from 0
        run_id=run_id, status="skipped", best_epoch=int(metrics.get("best_epoch", 0)) - 1,
        best_val_dice=float(metrics.get("best_val_dice", float("nan"))), summary=metrics,
        tracking_uri=tracker.shown_uri, experiment=experiment, run_url=tracker.run_url(run_id),
    )

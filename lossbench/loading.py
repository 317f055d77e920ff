"""A cell's training and validation data: preprocessed once on disk, drawn reproducibly by any number of loader workers.

Three pieces, used by :class:`lossbench.engine.Cell`:

- :class:`PreprocessedStore` keeps the output of a stage's deterministic transforms (loading,
  alignment, body crop, intensity scaling, reorientation, resampling: everything before the first
  random transform) as one ``.pt`` file per case under ``$LOSSBENCH_HOME/cache/preprocessed/<key>/``.
  The key hashes the dataset, its parameters, the stage, the spacing and the code version (lossbench
  with its git commit, MONAI, torch); each file's name hashes the case's input files (path, size,
  modification time). So every cell of a matrix, in any process or on any node that shares the folder,
  resamples a case once; a changed file, parameter or code version reads it again. Files are written
  under a temporary name in the same folder, then renamed.
- :class:`CellDataset` holds the preprocessed cases (in memory up to ``cache_rate``, the rest read from
  the store at each access) and applies the random tail of the transforms with a seed drawn from
  ``(cell seed, epoch, case index)`` alone. Which process draws a patch, and in which order, cannot
  change it: any number of loader workers, or none, gives the same patches, and a run resumed at an
  epoch draws what the uninterrupted run drew.
- :class:`EpochSampler` shuffles the cases of each epoch from ``(seed, epoch)`` and, under DDP, gives
  rank ``r`` of ``w`` every ``w``-th case of the permutation (padded to equal length, as PyTorch's
  ``DistributedSampler``), so each rank takes the same number of steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Bumped when the stored format changes.
STORE_FORMAT = "lossbench-preprocessed/1"


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The random state of case ``index``'s transforms in ``epoch``: depends on nothing else."""
    digest = hashlib.sha256(f"lossbench:item:{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_workers(setting: int | str, device_type: str, nproc: int = 1) -> int:
    """Loader workers per training process: the setting, or for ``auto`` a number chosen from the device
    and the cores: on CUDA up to 8 per GPU process, leaving one core to the process itself; on a CPU
    none up to 4 cores (a worker would take a core from the network's own threads) and a quarter of
    the cores beyond, up to 4."""
    if setting != "auto":
        return int(setting)
    cores = usable_cores()
    if device_type == "cuda":
        return max(0, min(8, cores // max(1, nproc) - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def split_transforms(compose: Any) -> tuple[Any, Any | None]:
    """``(deterministic head, random tail or None)`` of a MONAI ``Compose``: the tail starts at the first
    random transform, as MONAI's ``CacheDataset`` splits it."""
    from monai.transforms import Compose, RandomizableTrait

    steps = list(compose.transforms)
    first = next((i for i, t in enumerate(steps) if isinstance(t, RandomizableTrait)), len(steps))
    head = Compose(steps[:first])
    tail = Compose(steps[first:]) if first < len(steps) else None
    return head, tail


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """Tensors as plain ``torch.Tensor`` (no MONAI metadata), the rest as it is: what the store holds
    and what a fresh computation gives, so a cached case and a computed one are the same."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.as_tensor() if hasattr(value, "as_tensor") else value
        elif isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            out[key] = value
    return out


def _file_stamp(value: Any) -> Any:
    if isinstance(value, (str, Path)) and os.path.exists(value):
        st = os.stat(value)
        return [str(Path(value).resolve()), st.st_size, st.st_mtime_ns]
    return value


class PreprocessedStore:
    """One folder of preprocessed cases for one (dataset, parameters, stage, spacing, code) key."""

    def __init__(self, root: Path, key: Mapping[str, Any]) -> None:
        payload = json.dumps({"format": STORE_FORMAT, **key}, sort_keys=True, default=str)
        self.key = hashlib.sha256(payload.encode()).hexdigest()[:16]
        self.folder = Path(root) / self.key
        self.hits = 0
        self.misses = 0
        self._payload = payload

    def path(self, item: Mapping[str, Any]) -> Path:
        stamp = json.dumps({k: _file_stamp(v) for k, v in sorted(item.items())}, sort_keys=True, default=str)
        digest = hashlib.sha256(stamp.encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(item.get("id", "case")))[:80]
        return self.folder / f"{name}-{digest}.pt"

    def get(self, item: Mapping[str, Any], head: Callable[[Any], Any]) -> dict[str, Any]:
        """The preprocessed case: read from the store, or computed, stored (atomically) and returned."""
        import torch

        from lossbench.fsio import atomic_path

        path = self.path(item)
        if path.is_file():
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                return loaded
            except Exception:  # noqa: BLE001 - a torn or foreign file: compute the case again and replace it
                pass
        value = _plain(head(dict(item)))
        self.misses += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            from lossbench.fsio import atomic_write

            atomic_write(key_file, self._payload + "\n")
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
        return value


class CellDataset:
    """Preprocessed cases plus the seeded random tail; a map-style dataset indexed by ``(epoch, index)``
    (training) or ``index`` (validation, no random tail)."""

    def __init__(self, items: Sequence[Mapping[str, Any]], transform: Any, *, seed: int, cache_rate: float = 1.0,
                 store: PreprocessedStore | None = None) -> None:
        self.items = [dict(i) for i in items]
        self.head, self.tail = split_transforms(transform)
        self.seed = int(seed)
        self.store = store
        n_memory = int(len(self.items) * cache_rate)
        self.memory: list[dict[str, Any] | None] = [self._preprocess(i) for i in range(n_memory)]
        self.memory += [None] * (len(self.items) - n_memory)

    def _preprocess(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        if self.store is not None:
            return self.store.get(item, self.head)
        return _plain(self.head(dict(item)))

    def __len__(self) -> int:
        return len(self.items)

    def base(self, index: int) -> dict[str, Any]:
        cached = self.memory[index]
        return cached if cached is not None else self._preprocess(index)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        base = self.base(index)
        if self.tail is None:
            return base
        self.tail.set_random_state(seed=item_seed(self.seed, epoch, index))
        # a shallow copy: the random transforms make new tensors (crops, resampling) and new dicts
        # without writing into the cached ones (tests/test_loading.py checks the cache is unchanged)
        return self.tail(dict(base))


class EpochSampler:
    """Yields ``(epoch, index)``: the epoch's permutation from ``(seed, epoch)``, rank ``rank``'s share."""

    def __init__(self, n: int, seed: int, *, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = int(n), int(seed), int(rank), int(world)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self):
        import torch

        from lossbench.engine import epoch_seed

        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator).tolist()
        total = len(self) * self.world
        order += order[: total - self.n]  # every rank the same number of steps (DistributedSampler's padding)
        for index in order[self.rank::self.world]:
            yield (self.epoch, index)


def _quiet_worker(worker_id: int) -> None:
    """A loader worker uses one thread: the training process keeps the cores it was given."""
    import torch

    torch.set_num_threads(1)


def train_loader(dataset: CellDataset, sampler: EpochSampler, *, batch_size: int, workers: int,
                 pin_memory: bool) -> Any:
    """The cell's one training loader, made once: with workers, they persist across epochs (the epoch
    travels with each index) and prefetch two batches each."""
    from monai.data import list_data_collate
    from torch.utils.data import DataLoader

    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 2, "worker_init_fn": _quiet_worker}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=False,
                      collate_fn=list_data_collate, pin_memory=pin_memory, **extra)

"""The dataset contract the training engine works against.

A dataset plugin registers a component whose factory returns a :class:`PetCtDataset`.
The engine uses it like this (nothing here imports torch or monai at module level)::

    ds = registry.build("dataset", "psma", {"data": "/data/PSMA"})
    ds.validate()                                   # clear LossbenchError before any training
    plan = ds.split_plan()                          # 5 folds + held-out test, grouped by patient
    plan.write(run_dir / "splits.json")             # atomic; plan.sha256 identifies it
    train_ids, val_ids = plan.fold(k)
    train_cases = ds.cases_by_id(train_ids)

    train_tf = ds.transforms("train", patch=(128,) * 3, spacing=(2.0,) * 3)
    train_ds = monai.data.CacheDataset(ds.data_dicts(train_cases), train_tf)   # caches up to the first random transform
    loader = monai.data.DataLoader(train_ds, batch_size=4, shuffle=True)       # list_data_collate by default
    batch["image"]  # float32 [B, 2, *patch]: channel 0 CT scaled to [0, 1], channel 1 PET SUV (raw)
    batch["label"]  # int64   [B, 1, *patch]: 0 background, 1 lesion

    infer_tf = ds.transforms("infer", spacing=(2.0,) * 3)
    item = infer_tf(ds.data_dicts([case])[0])       # whole volume, 2 mm, RAS, cropped to CT > 0
    logits = sliding_window_inference(item["image"][None], roi_size, sw_batch_size, net)[0]
    mask = ds.prediction_to_original(item, logits, infer_tf)   # uint8 (x, y, z) on the original PET grid

Data dictionaries use the keys ``"CT"``, ``"PT"`` and ``"label"`` (file paths) plus ``"id"`` and
``"patient"``; the transforms join CT and PT into ``"image"`` (``ConcatItemsd(['CT', 'PT'])`` as
in the reference code) and delete the two. In the ``"val"`` and ``"infer"`` stages ``"label"``
is ``uint8`` (whole volumes are cached, so it is kept small); call ``.long()`` where a loss
needs int64.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lossbench.errors import LossbenchError
from lossbench.fsio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from monai.transforms import Compose

Split = Literal["train", "test"]
Stage = Literal["train", "val", "infer"]
SPLITS: tuple[str, ...] = ("train", "test")
STAGES: tuple[str, ...] = ("train", "val", "infer")
SCHEMES: tuple[str, ...] = ("contiguous", "shuffled")

#: Keys of the data dictionaries and of the transformed items.
CT_KEY, PET_KEY, LABEL_KEY, IMAGE_KEY = "CT", "PT", "label", "image"

SPLIT_FORMAT = "lossbench-splits/1"


class DatasetError(LossbenchError):
    """A dataset that cannot be used as it is; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) or [message]

    @classmethod
    def from_problems(cls, problems: Sequence[str]) -> DatasetError:
        """One line: the first problem, then how many more there are (all kept in ``problems``)."""
        first = problems[0]
        more = len(problems) - 1
        tail = ""
        if more:
            tail = f" (and {more} more problem{'s' if more > 1 else ''}: {problems[1]}{' …' if more > 1 else ''})"
        return cls(first + tail, problems)


class DatasetWarning(UserWarning):
    """A note about the data that does not stop a run (e.g. a grid resampled at load time)."""


# -- cases ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """One PET/CT study: CT, PET (SUV) and an optional binary lesion label.

    ``patient`` groups studies of the same patient (splits never separate them); it defaults
    to ``id``. ``split`` is ``"train"`` (the cross-validation pool) or ``"test"`` (held out).
    """

    id: str
    ct: Path
    pet: Path
    label: Path | None
    split: str = "train"
    patient: str = ""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"case {self.id!r}: split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        object.__setattr__(self, "ct", Path(self.ct))
        object.__setattr__(self, "pet", Path(self.pet))
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))
        if not self.patient:
            object.__setattr__(self, "patient", self.id)


# -- splits ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Cross-validation folds over the training pool plus the held-out test set.

    ``folds[k]`` holds the validation case ids of fold ``k`` (0-based); the training ids of
    fold ``k`` are the other folds' ids. ``patients`` maps every case id (folds and test) to
    its patient. A plan is plain data: :meth:`to_json` is canonical (sorted keys and ids), and
    :attr:`sha256` hashes it, so two plans with the same content have the same hash.
    """

    folds: tuple[tuple[str, ...], ...]
    test: tuple[str, ...]
    patients: Mapping[str, str]
    scheme: str = "contiguous"
    seed: int | None = None
    dataset: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folds", tuple(tuple(sorted(f)) for f in self.folds))
        object.__setattr__(self, "test", tuple(sorted(self.test)))
        object.__setattr__(self, "patients", dict(sorted(dict(self.patients).items())))
        if self.scheme not in SCHEMES:
            raise LossbenchError(f"unknown split scheme {self.scheme!r}; use one of {', '.join(SCHEMES)}")
        if self.scheme == "contiguous":
            object.__setattr__(self, "seed", None)  # the seed plays no part, so it must not change the hash
        seen: dict[str, str] = {}
        for where, ids in [*((f"fold {k}", f) for k, f in enumerate(self.folds)), ("test", self.test)]:
            for cid in ids:
                if cid in seen:
                    raise LossbenchError(f"split plan: case {cid!r} is in {seen[cid]} and in {where}")
                if cid not in self.patients:
                    raise LossbenchError(f"split plan: case {cid!r} ({where}) has no patient")
                seen[cid] = where
        where_patient: dict[str, str] = {}
        for cid, group in seen.items():
            place = "test" if group == "test" else group
            pid = self.patients[cid]
            if where_patient.setdefault(pid, place) != place:
                raise LossbenchError(
                    f"split plan: patient {pid!r} has cases in {where_patient[pid]} and in {place}; "
                    "cases of one patient must stay together"
                )

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def fold(self, k: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(train_ids, val_ids)`` of fold ``k`` (0-based), each sorted."""
        if not 0 <= k < self.n_folds:
            raise LossbenchError(f"fold {k} does not exist: the split plan has folds 0-{self.n_folds - 1}")
        val = self.folds[k]
        train = tuple(sorted(cid for j, fold in enumerate(self.folds) if j != k for cid in fold))
        return train, val

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "dataset": self.dataset,
            "scheme": self.scheme,
            "seed": self.seed,
            "n_folds": self.n_folds,
            "folds": [list(f) for f in self.folds],
            "test": list(self.test),
            "patients": dict(self.patients),
        }

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys; compact unless ``indent`` is given)."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.as_dict(), sort_keys=True, indent=indent, separators=separators, ensure_ascii=True)

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical (compact) JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def write(self, path: str | Path) -> Path:
        """Write indented JSON atomically (temporary file in the same folder, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.to_json(indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, text: str) -> SplitPlan:
        try:
            data = json.loads(text)
            if data.get("format") != SPLIT_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {SPLIT_FORMAT!r}")
            return cls(
                folds=tuple(tuple(f) for f in data["folds"]), test=tuple(data["test"]),
                patients=data["patients"], scheme=data["scheme"], seed=data["seed"], dataset=data["dataset"],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LossbenchError(f"not a lossbench split plan: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> SplitPlan:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise LossbenchError(f"cannot read split plan {str(path)!r}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except LossbenchError as exc:
            raise LossbenchError(f"{path}: {exc}") from None



def _hash_order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def order_patients(patients: Iterable[str], scheme: str = "contiguous", seed: int = 0) -> list[str]:
    """Sorted (``contiguous``), or shuffled by a seeded hash (``shuffled``: stable across
    Python/numpy versions and platforms)."""
    unique = sorted(set(patients))
    if scheme == "contiguous":
        return unique
    if scheme == "shuffled":
        return sorted(unique, key=lambda p: (_hash_order(p, seed), p))
    raise LossbenchError(f"unknown split scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def contiguous_blocks(items: Sequence[str], n: int) -> list[list[str]]:
    """Cut ``items`` into ``n`` contiguous blocks: ``len // n`` each, the first ``len % n`` one longer."""
    size, extra = divmod(len(items), n)
    blocks, start = [], 0
    for k in range(n):
        stop = start + size + (1 if k < extra else 0)
        blocks.append(list(items[start:stop]))
        start = stop
    return blocks


def make_split_plan(
    cases: Sequence[Case], n_folds: int = 5, scheme: str = "contiguous", seed: int = 0, dataset: str = ""
) -> SplitPlan:
    """Folds over the ``train`` cases, grouped by patient; ``test`` cases are the held-out set.

    ``contiguous`` (the reference, PAPER.md §4.3): sort the patient ids and cut them into
    ``n_folds`` contiguous blocks, the first ``n mod n_folds`` one patient larger. With one case
    per patient this is exactly "sort the image ids and cut". ``shuffled``: the same cut over
    the patients ordered by ``sha256(f"{seed}:{patient}")``.
    """
    if scheme not in SCHEMES:
        raise LossbenchError(f"unknown split scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        splits = ", ".join(sorted({c.split for c in cases if c.id == dupes[0]}))
        raise DatasetError(f"case id {dupes[0]!r} appears more than once (in {splits})")
    train = [c for c in cases if c.split == "train"]
    test = [c for c in cases if c.split == "test"]
    test_patients = {c.patient: c.id for c in test}
    for c in train:
        if c.patient in test_patients:
            raise DatasetError(
                f"patient {c.patient!r} has case {c.id!r} in the training pool and case "
                f"{test_patients[c.patient]!r} in the test set; cases of one patient must stay together"
            )
    by_patient: dict[str, list[str]] = {}
    for c in train:
        by_patient.setdefault(c.patient, []).append(c.id)
    if n_folds < 2:
        raise LossbenchError(f"n_folds={n_folds}: cross-validation needs at least 2 folds")
    if len(by_patient) < n_folds:
        raise DatasetError(
            f"{len(by_patient)} training patients cannot make {n_folds} folds; use fewer folds or more data"
        )
    order = order_patients(by_patient, scheme, seed)
    folds = [tuple(cid for p in block for cid in by_patient[p]) for block in contiguous_blocks(order, n_folds)]
    return SplitPlan(
        folds=tuple(folds), test=tuple(c.id for c in test), patients={c.id: c.patient for c in cases},
        scheme=scheme, seed=seed, dataset=dataset,
    )


# -- the dataset contract --------------------------------------------------------------------
class PetCtDataset(abc.ABC):
    """Base class of dataset plugins: cases, validation, splits, MONAI data and transforms.

    Subclasses implement :meth:`cases`, :meth:`validate` and :meth:`transforms`; the rest is
    generic. Binary segmentation of two-channel PET/CT: ``in_channels`` 2 (CT, PET) and
    ``num_classes`` 2 (background, lesion); the engine builds networks with these.
    """

    name: str = "dataset"
    in_channels: int = 2
    num_classes: int = 2
    image_key: str = IMAGE_KEY
    label_key: str = LABEL_KEY
    #: Defaults of :meth:`split_plan`; plugins set them from their parameters.
    n_folds: int = 5
    split_scheme: str = "contiguous"
    split_seed: int = 0

    # -- what subclasses provide -----------------------------------------------------------
    @abc.abstractmethod
    def cases(self, split: str | None = None) -> list[Case]:
        """All cases sorted by id, or those of one split (``"train"`` or ``"test"``)."""

    @abc.abstractmethod
    def validate(self) -> None:
        """Check every case's files without writing anything.

        Raises :class:`DatasetError` (a :class:`LossbenchError`) whose message names the case
        and the file, e.g. ``case PSMA-001: label .../labelsTr/PSMA-001.nii.gz is not binary``.
        """

    @abc.abstractmethod
    def transforms(
        self,
        stage: str,
        *,
        patch: Sequence[int] | None = None,
        spacing: Sequence[float] = (2.0, 2.0, 2.0),
        pos_neg: tuple[float, float] = (4.0, 1.0),
        num_samples: int = 1,
        affine_prob: float = 0.5,
    ) -> Compose:
        """A MONAI ``Compose`` over :meth:`data_dicts` items for ``stage`` in ``train``/``val``/``infer``.

        Output items hold ``"image"`` (float32, 2 channels: CT then PET) and ``"label"`` (1 channel,
        integer; optional in ``infer``). ``train`` returns a list of ``num_samples`` patches of
        ``patch`` (required there, ignored elsewhere); ``val``/``infer`` return the whole resampled volume. Every random
        transform comes after every deterministic one, so ``CacheDataset`` caches the
        deterministic prefix (the ``psma`` plugin also exposes the two parts separately).
        """

    # -- generic ---------------------------------------------------------------------------
    def cases_by_id(self, ids: Iterable[str]) -> list[Case]:
        """The cases with these ids, in the given order; unknown ids are an error."""
        table = {c.id: c for c in self.cases()}
        missing = [i for i in ids if i not in table]
        if missing:
            raise DatasetError(
                f"{self.name}: case {missing[0]!r} is not in the dataset"
                + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else "")
                + "; was the split plan made for other data?"
            )
        return [table[i] for i in ids]

    def split_plan(self, n_folds: int | None = None, scheme: str | None = None, seed: int | None = None) -> SplitPlan:
        """Folds of the ``train`` cases grouped by patient, plus the ``test`` cases (see :func:`make_split_plan`).

        Arguments left ``None`` take the dataset's settings (``n_folds`` 5, ``contiguous``, seed 0).
        """
        return make_split_plan(
            self.cases(),
            n_folds=self.n_folds if n_folds is None else n_folds,
            scheme=self.split_scheme if scheme is None else scheme,
            seed=self.split_seed if seed is None else seed,
            dataset=self.name,
        )

    def data_dicts(self, cases: Iterable[Case]) -> list[dict[str, Any]]:
        """MONAI data dictionaries: ``{"CT", "PT", "label"?: path str, "id", "patient"}``."""
        out = []
        for case in cases:
            item: dict[str, Any] = {
                CT_KEY: str(case.ct), PET_KEY: str(case.pet), "id": case.id, "patient": case.patient,
            }
            if case.label is not None:
                item[LABEL_KEY] = str(case.label)
            out.append(item)
        return out

    def prediction_to_original(self, item: Mapping[str, Any], logits: torch.Tensor, transforms: Compose) -> np.ndarray:
        """See :func:`prediction_to_original`."""
        return prediction_to_original(item, logits, transforms)

    def info(self) -> dict[str, Any]:
        """Facts to log with a run (plugins add their own: root folder, layout, ...)."""
        cases = self.cases()
        return {
            "dataset": self.name,
            "n_train": sum(c.split == "train" for c in cases),
            "n_test": sum(c.split == "test" for c in cases),
            "n_patients": len({c.patient for c in cases}),
        }


def prediction_to_original(item: Mapping[str, Any], logits: Any, transforms: Compose) -> np.ndarray:
    """Logits of one transformed item -> uint8 mask on the original PET/label grid, axes (x, y, z).

    ``item`` is one (decollated) output of ``transforms`` (the ``"infer"`` or ``"val"`` stage of
    a :class:`PetCtDataset`, the same ``Compose`` object); ``logits`` is ``[C, *spatial]``
    or ``[1, C, *spatial]`` on that item's grid. As in the reference (PAPER.md §4.5), MONAI
    ``Invertd`` undoes the spacing, orientation and foreground crop with ``nearest_interp=False``,
    so the C-channel logits are resampled (bilinear) back to the original grid; the argmax
    over channels follows. Voxels outside the foreground crop get logits 0 for every class,
    hence class 0.
    """
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    image = item[IMAGE_KEY]
    if not isinstance(image, MetaTensor) or not image.applied_operations:
        raise LossbenchError(
            "prediction_to_original needs the transformed item (its 'image' MetaTensor carries the "
            "applied transforms); pass the output of dataset.transforms('infer', ...) after decollate_batch"
        )
    pred = torch.as_tensor(logits).detach()
    if pred.ndim == image.ndim + 1 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.shape[1:] != image.shape[1:]:
        raise LossbenchError(
            f"prediction_to_original: logits of spatial shape {tuple(pred.shape[1:])} do not match the "
            f"item's image {tuple(image.shape[1:])}"
        )
    # Invertd reads the trace from the original key only when the prediction is a MetaTensor
    pred = MetaTensor(pred.as_tensor() if isinstance(pred, MetaTensor) else pred).float().cpu()
    # The image inherits the CT's trace (ConcatItemsd keeps its first input's metadata); the CT,
    # PET and label went through the same crop/orientation/spacing, so Invertd replays the PET's.
    inverter = Invertd(keys="pred", transform=transforms, orig_keys=PET_KEY, nearest_interp=False, to_tensor=True)
    out = inverter({"pred": pred, PET_KEY: image})["pred"]
    return np.asarray(torch.argmax(torch.as_tensor(out), dim=0).cpu().numpy(), dtype=np.uint8)

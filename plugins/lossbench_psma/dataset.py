"""The ``psma`` dataset: PSMA PET/CT studies in the nnU-Net raw or the autoPET folder layout.

Discovery and validation use nibabel and numpy only; the MONAI transforms (PAPER.md §4.4-4.5)
import monai when they are built. Nothing is ever written into the data folder.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossbench.datasets import (
    CT_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    PET_KEY,
    SCHEMES,
    STAGES,
    Case,
    DatasetError,
    DatasetWarning,
    PetCtDataset,
)
from lossbench.components import parse_numbers
from lossbench.errors import LossbenchError
from lossbench.fsio import atomic_write

LAYOUTS = ("auto", "nnunet", "autopet")
LABEL_GEOMETRY = ("strict", "resample")
AUTOPET_FILES = {"ct": "CTres.nii.gz", "pet": "SUV.nii.gz", "label": "SEG.nii.gz"}
#: CT value outside the CT's field of view when CT is resampled onto the PET grid (air).
CT_PAD_HU = -1024.0
#: Affines agree when every entry differs by less than this (mm).
AFFINE_ATOL = 1e-3


# -- the component's factory and validator ---------------------------------------------------
def build_psma(**params: Any) -> PsmaDataset:
    return PsmaDataset(**params)


def parse_ct_window(text: str) -> tuple[float, float] | None:
    """``"minmax"`` -> None (min-max scaling, the reference); ``"-1000,1000"`` -> a fixed HU window."""
    if str(text).strip().lower() == "minmax":
        return None
    try:
        low, high = parse_numbers(text, float, what="ct_window", count=(2,), broadcast=None, positive=False)
    except LossbenchError:
        raise LossbenchError(f"dataset psma: ct_window={text!r} must be minmax or two HU values LOW,HIGH "
                             "like -1000,1000") from None
    if not low < high:
        raise LossbenchError(f"dataset psma: ct_window={text!r} needs LOW < HIGH")
    return (low, high)


def check_psma(params: Mapping[str, Any], **context: Any) -> None:
    """Cheap parameter checks (no file is read): the folder exists, the fraction is sane."""
    data = params.get("data") or ""
    if data and not Path(data).expanduser().is_dir():
        raise LossbenchError(f"dataset psma: data folder {data!r} does not exist")
    fraction = params.get("test_fraction", 0.2)
    if not 0.0 <= fraction < 1.0:
        raise LossbenchError(f"dataset psma: test_fraction={fraction} must be in [0, 1)")
    if params.get("n_folds", 5) < 2:
        raise LossbenchError(f"dataset psma: n_folds={params.get('n_folds')} must be at least 2")
    parse_ct_window(params.get("ct_window", "minmax"))
    scale = params.get("pet_scale", 1.0)
    if not (scale > 0 and math.isfinite(scale)):
        raise LossbenchError(f"dataset psma: pet_scale={scale} must be a positive number (1 = SUV as is)")
    tolerance = params.get("negative_suv_tolerance", 0.0)
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise LossbenchError(f"dataset psma: negative_suv_tolerance={tolerance} must be a number >= 0 "
                             "(the most negative SUV accepted, as a positive number; 0 = none)")


# -- remembering successful validations -------------------------------------------------------
VALIDATION_FORMAT = "lossbench-psma-validation/2"


def _fingerprint(cases: Sequence[Case], label_geometry: str, negative_suv_tolerance: float = 0.0) -> dict[str, Any]:
    """Path, size and mtime of every file of every case: cheap (stat only), changes with any file."""
    files = []
    for case in cases:
        for path in (case.ct, case.pet, case.label):
            if path is None:
                continue
            try:
                st = os.stat(path)
                files.append([case.id, str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([case.id, str(path), -1, -1])
    return {"format": VALIDATION_FORMAT, "label_geometry": label_geometry,
            "negative_suv_tolerance": float(negative_suv_tolerance), "files": files}


def _validation_record(fingerprint: Mapping[str, Any]) -> Path:
    from lossbench.paths import cache_dir

    key = hashlib.sha256(json.dumps([f[1] for f in fingerprint["files"]], sort_keys=True).encode()).hexdigest()
    return cache_dir() / "validated" / f"psma-{key[:24]}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data))
    except OSError:
        pass  # only a speed-up: a read-only cache folder means validating again next time


# -- discovery --------------------------------------------------------------------------------
def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]+", "-", text).strip("-") or "study"


def holdout_patients(patients: Sequence[str], fraction: float, seed: int = 0) -> set[str]:
    """A deterministic ``fraction`` of the patients (rounded; at least one, never all) for testing.

    Patients are ordered by ``sha256(f"test:{seed}:{patient}")`` and the first ones are taken,
    so adding patients moves few existing ones.
    """
    unique = sorted(set(patients))
    if fraction <= 0 or len(unique) < 2:
        return set()
    n_test = min(max(1, round(fraction * len(unique))), len(unique) - 1)
    order = sorted(unique, key=lambda p: (hashlib.sha256(f"test:{seed}:{p}".encode()).hexdigest(), p))
    return set(order[:n_test])


def _nnunet_ending(root: Path) -> str:
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            ending = json.loads(meta.read_text(encoding="utf-8")).get("file_ending")
        except (OSError, ValueError, AttributeError):
            ending = None
        if isinstance(ending, str) and ending.startswith("."):
            return ending
    if any((root / "imagesTr").glob("*_0000.nii")) and not any((root / "imagesTr").glob("*_0000.nii.gz")):
        return ".nii"
    return ".nii.gz"


def _check_channel_names(root: Path) -> None:
    meta = root / "dataset.json"
    if not meta.is_file():
        return
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{meta}: not readable JSON ({exc})") from None
    names = info.get("channel_names") or info.get("modality") or {}
    if not isinstance(names, dict):
        return
    first = str(names.get("0", "")).upper()
    second = str(names.get("1", "")).upper()
    if any(t in first for t in ("PET", "PT", "SUV")) or (second and "CT" in second and "PET" not in second):
        raise DatasetError(
            f"{meta}: channel_names say channel 0 is {names.get('0')!r} and channel 1 is {names.get('1')!r}, "
            "but psma expects CT as _0000 and PET (SUV) as _0001"
        )


def _nnunet_ids(folder: Path, ending: str) -> set[str]:
    ids: set[str] = set()
    if folder.is_dir():
        for path in folder.iterdir():
            name = path.name
            for channel in ("_0000", "_0001"):
                if name.endswith(channel + ending):
                    ids.add(name[: -len(channel + ending)])
    return ids


def discover_nnunet(root: Path, test_fraction: float = 0.2, test_seed: int = 0) -> list[Case]:
    """``imagesTr/ID_0000`` (CT), ``ID_0001`` (PET SUV), ``labelsTr/ID`` and the Ts twins (split ``test``).

    Without ``imagesTs`` a ``test_fraction`` of the patients of ``imagesTr`` is held out.
    """
    _check_channel_names(root)
    ending = _nnunet_ending(root)
    cases: list[Case] = []
    for split, images, labels in (("train", "imagesTr", "labelsTr"), ("test", "imagesTs", "labelsTs")):
        ids = _nnunet_ids(root / images, ending)
        label_dir = root / labels
        if label_dir.is_dir():
            ids |= {p.name[: -len(ending)] for p in label_dir.iterdir() if p.name.endswith(ending)}
        for cid in sorted(ids):
            label = label_dir / f"{cid}{ending}" if (split == "train" or label_dir.is_dir()) else None
            cases.append(Case(
                id=cid, ct=root / images / f"{cid}_0000{ending}", pet=root / images / f"{cid}_0001{ending}",
                label=label, split=split,
            ))
    if not any(c.split == "test" for c in cases):
        held = holdout_patients([c.patient for c in cases], test_fraction, test_seed)
        cases = [Case(c.id, c.ct, c.pet, c.label, "test" if c.patient in held else "train", c.patient) for c in cases]
    return cases


def _autopet_study_dirs(root: Path) -> list[tuple[Path, int]]:
    """Folders holding autoPET files, one or two levels below ``root``, with their depth."""
    names = set(AUTOPET_FILES.values())
    found = []
    for first in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((first / n).exists() for n in names):
            found.append((first, 1))
            continue
        for second in sorted(p for p in first.iterdir() if p.is_dir()):
            if any((second / n).exists() for n in names):
                found.append((second, 2))
    return found


def discover_autopet(root: Path, test_fraction: float = 0.2, test_seed: int = 0) -> list[Case]:
    """``<patient>/<study>/{CTres,SUV,SEG}.nii.gz`` or ``<study>/{...}``; a test fraction held out by patient."""
    cases = []
    for folder, depth in _autopet_study_dirs(root):
        if depth == 1:
            patient = folder.name
            cid = _sanitize(folder.name)
        else:
            patient = folder.parent.name
            cid = f"{_sanitize(patient)}_{_sanitize(folder.name)}"
        cases.append(Case(
            id=cid, ct=folder / AUTOPET_FILES["ct"], pet=folder / AUTOPET_FILES["pet"],
            label=folder / AUTOPET_FILES["label"], split="train", patient=patient,
        ))
    ids = [c.id for c in cases]
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        folders = [str(c.ct.parent) for c in cases if c.id == clash[0]]
        raise DatasetError(f"autoPET folders {' and '.join(folders)} both map to case id {clash[0]!r}; rename one")
    held = holdout_patients([c.patient for c in cases], test_fraction, test_seed)
    return [Case(c.id, c.ct, c.pet, c.label, "test" if c.patient in held else "train", c.patient) for c in cases]


def detect_layout(root: Path) -> str:
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nnunet"
    if root.is_dir() and _autopet_study_dirs(root):
        return "autopet"
    raise DatasetError(
        f"no PSMA PET/CT data found in {root}: expected the nnU-Net raw layout (imagesTr/ID_0000.nii.gz CT, "
        "imagesTr/ID_0001.nii.gz PET SUV, labelsTr/ID.nii.gz) or the autoPET layout "
        "(<patient>/<study>/CTres.nii.gz, SUV.nii.gz, SEG.nii.gz)"
    )


# -- validation -------------------------------------------------------------------------------
def _spatial(shape) -> tuple[int, ...]:
    """The 3-D shape of an image, a trailing singleton 4th axis (x, y, z, 1) dropped."""
    shape = tuple(int(n) for n in shape)
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def _same_grid(a_shape, a_affine, b_shape, b_affine) -> bool:
    import numpy as np

    return _spatial(a_shape) == _spatial(b_shape) and bool(np.allclose(a_affine, b_affine, atol=AFFINE_ATOL))


def _load(case: Case, role: str, path: Path, problems: list[str]):
    """nibabel image and its data, or ``None`` after appending a problem that names case and file."""
    import nibabel as nib
    import numpy as np

    where = f"case {case.id}: {role} file {path}"
    if not path.is_file():
        problems.append(f"case {case.id}: missing {role} file {path}")
        return None
    if path.stat().st_size == 0:
        problems.append(f"{where} is empty (0 bytes)")
        return None
    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        problems.append(f"{where} cannot be read: {type(exc).__name__}: {str(exc).strip() or 'unreadable'}")
        return None
    if len(_spatial(shape)) != 3:  # (x, y, z, 1) is 3-D too, as lossbench evaluate reads it
        problems.append(f"{where} must be a 3-D image (or x, y, z, 1), got shape {tuple(shape)}")
        return None
    if 0 in shape:
        problems.append(f"{where} is empty (shape {tuple(shape)})")
        return None
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated gzip, short file, ...
        problems.append(f"{where} is corrupt: {type(exc).__name__}: {str(exc).strip() or 'unreadable data'}")
        return None
    return img, data


def check_case(case: Case, label_geometry: str = "strict",
               negative_suv_tolerance: float = 0.0) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of one case; each names the case and the file.

    Negative SUV down to ``-negative_suv_tolerance`` (reconstructed PET has small negatives) is a
    note, reported with its count and minimum; the values are used as they are (not clipped).

    Files are read one at a time and their data dropped once checked, so that a few cases can
    be checked in parallel without holding every volume in memory.
    """
    import numpy as np

    problems: list[str] = []
    notes: list[str] = []
    headers = {}
    loaded = _load(case, "CT", case.ct, problems)
    if loaded is not None:
        headers["CT"], data = loaded
        if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
            problems.append(f"case {case.id}: CT file {case.ct} contains {int(np.isnan(data).sum())} NaN voxels")
        del data
    loaded = _load(case, "PET", case.pet, problems)
    if loaded is not None:
        headers["PET"], data = loaded
        if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
            problems.append(f"case {case.id}: PET file {case.pet} contains {int(np.isnan(data).sum())} NaN voxels "
                            "(SUV must be finite)")
        elif float(np.min(data)) < -negative_suv_tolerance:
            problems.append(f"case {case.id}: PET file {case.pet} has negative SUV (minimum {float(np.min(data)):.4g}, "
                            f"{int((data < 0).sum())} voxels); "
                            + (f"beyond negative_suv_tolerance={negative_suv_tolerance:g}" if negative_suv_tolerance
                               else "SUV must be >= 0, or set negative_suv_tolerance to accept the small "
                                    "negatives of a reconstruction"))
        elif float(np.min(data)) < 0:
            notes.append(f"case {case.id}: PET file {case.pet} has {int((data < 0).sum())} voxels of negative SUV "
                         f"(minimum {float(np.min(data)):.4g}) within negative_suv_tolerance="
                         f"{negative_suv_tolerance:g}; they are used as they are")
        elif not np.isfinite(data).all():
            problems.append(f"case {case.id}: PET file {case.pet} contains infinite values")
        del data
    if case.label is None:
        if case.split == "train":
            problems.append(f"case {case.id}: no label file (training cases need one)")
    else:
        loaded = _load(case, "label", case.label, problems)
        if loaded is not None:
            headers["label"], data = loaded
            if not ((data == 0) | (data == 1)).all():
                values = np.unique(data)
                shown = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
                problems.append(f"case {case.id}: label file {case.label} is not binary (values {shown}); "
                                "expected 0 = background, 1 = lesion")
            del data
    pet = headers.get("PET")
    if pet is not None and "label" in headers:
        lab = headers["label"]
        if not _same_grid(pet.shape, pet.affine, lab.shape, lab.affine):
            detail = (f"shape {tuple(lab.shape)} vs PET {tuple(pet.shape)}" if pet.shape != lab.shape
                      else "affine differs from the PET's")
            if label_geometry == "strict":
                problems.append(
                    f"case {case.id}: label file {case.label} is not on the PET grid of {case.pet} ({detail}); "
                    "resample it to the PET geometry, or set label_geometry=resample to resample it "
                    "nearest-neighbour at load time"
                )
            else:
                notes.append(f"case {case.id}: label file {case.label} is not on the PET grid ({detail}); "
                             "it is resampled nearest-neighbour onto the PET grid at load time")
    if pet is not None and "CT" in headers:
        ct = headers["CT"]
        if not _same_grid(pet.shape, pet.affine, ct.shape, ct.affine):
            notes.append(f"case {case.id}: CT file {case.ct} is not on the PET grid; it is resampled "
                         f"(linear, padding {CT_PAD_HU:g} HU) onto the PET grid at load time")
    return problems, notes


#: What a per-case note says, once for the cohort: (pattern of the note, the cohort sentence).
_NOTE_KINDS = (
    (re.compile(r"CT file .* is not on the PET grid"),
     f"CT is not on the PET grid; it is resampled (linear, padding {CT_PAD_HU:g} HU) onto the PET grid at load time"),
    (re.compile(r"label file .* is not on the PET grid"),
     "the label is not on the PET grid; it is resampled nearest-neighbour onto the PET grid at load time"),
    (re.compile(r"voxels of negative SUV .* within negative_suv_tolerance"),
     "PET has negative SUV within negative_suv_tolerance; the values are used as they are"),
)


def cohort_notes(notes: Sequence[str], n_cases: int) -> list[str]:
    """Per-case notes as one line per kind for the cohort: ``in 12 of 380 cases (PSMA-001, …): CT is …``."""
    grouped: dict[str, list[str]] = {}
    for note in notes:
        case = note.split(":", 1)[0].removeprefix("case ").strip()
        sentence = next((text for pattern, text in _NOTE_KINDS if pattern.search(note)), None)
        if sentence is None:
            grouped.setdefault(note, [])  # a note of no known kind is kept as it is
            continue
        grouped.setdefault(sentence, []).append(case)
    out = []
    for sentence, cases in grouped.items():
        if not cases:
            out.append(sentence)
            continue
        shown = ", ".join(cases[:5]) + (", …" if len(cases) > 5 else "")
        out.append(f"dataset psma: in {len(cases)} of {n_cases} cases ({shown}): {sentence}")
    return out


# -- MONAI transforms -------------------------------------------------------------------------
def _make_align_class() -> type:
    import numpy as np
    import torch
    from monai.config import KeysCollection
    from monai.transforms import MapTransform, ResampleToMatch

    class AlignToPETd(MapTransform):
        """Resample ``keys`` onto the grid of ``PT`` where their shape or affine differ.

        CT: trilinear with padding ``CT_PAD_HU`` (air); label: nearest with padding 0. The step
        is not traced (as if the files had been converted that way), so inverting the pipeline
        lands on the PET grid. Where the grids agree the data passes through untouched.
        """

        def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
            super().__init__(keys, allow_missing_keys)
            self.resample = ResampleToMatch()
            self.resample.tracing = False

        def __call__(self, data):
            d = dict(data)
            ref = d[PET_KEY]
            for key in self.key_iterator(d):
                img = d[key]
                same = tuple(img.shape[1:]) == tuple(ref.shape[1:]) and np.allclose(
                    np.asarray(img.affine), np.asarray(ref.affine), atol=AFFINE_ATOL)
                if same:
                    continue
                if key == CT_KEY:
                    out = self.resample(img - CT_PAD_HU, img_dst=ref, mode="bilinear", padding_mode="zeros")
                    out = out + CT_PAD_HU
                else:
                    out = self.resample(img, img_dst=ref, mode="nearest", padding_mode="zeros")
                d[key] = out.to(torch.float32)
            return d

    # importable (and so picklable, e.g. for spawned DataLoader workers) as lossbench_psma.dataset.AlignToPETd
    AlignToPETd.__module__ = __name__
    AlignToPETd.__qualname__ = "AlignToPETd"
    return AlignToPETd


_LAZY_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """``AlignToPETd`` is built on first use, so importing this module does not import monai."""
    if name == "AlignToPETd":
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _make_align_class()
        return _LAZY_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PsmaDataset(PetCtDataset):
    """PSMA PET/CT in the nnU-Net raw or the autoPET layout (see the component's description)."""

    name = "psma"

    def __init__(
        self,
        data: str = "",
        layout: str = "auto",
        n_folds: int = 5,
        split_scheme: str = "contiguous",
        split_seed: int = 0,
        test_fraction: float = 0.2,
        test_seed: int = 0,
        label_geometry: str = "strict",
        ct_window: str = "minmax",
        pet_scale: float = 1.0,
        negative_suv_tolerance: float = 0.0,
    ) -> None:
        if layout not in LAYOUTS:
            raise LossbenchError(f"dataset psma: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if split_scheme not in SCHEMES:
            raise LossbenchError(f"dataset psma: split_scheme {split_scheme!r} is not one of {', '.join(SCHEMES)}")
        if label_geometry not in LABEL_GEOMETRY:
            raise LossbenchError(f"dataset psma: label_geometry {label_geometry!r} is not one of "
                                 f"{', '.join(LABEL_GEOMETRY)}")
        check_psma({"data": data, "test_fraction": test_fraction, "n_folds": n_folds, "ct_window": ct_window,
                    "pet_scale": pet_scale, "negative_suv_tolerance": negative_suv_tolerance})
        self.data = data
        self.layout = layout
        self.n_folds = n_folds
        self.split_scheme = split_scheme
        self.split_seed = split_seed
        self.test_fraction = test_fraction
        self.test_seed = test_seed
        self.label_geometry = label_geometry
        self.ct_window = parse_ct_window(ct_window)
        self.pet_scale = float(pet_scale)
        self.negative_suv_tolerance = float(negative_suv_tolerance)
        self.notes: list[str] = []
        self._root: Path | None = None
        self._layout: str | None = None
        self._cases: list[Case] | None = None

    # -- where the data is ---------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The data folder; the synthetic default cohort is generated on first use when ``data`` is empty."""
        if self._root is None:
            if self.data:
                self._root = Path(self.data).expanduser().resolve()
            else:
                try:
                    from lossbench_psma.synth import default_cohort
                except ImportError as exc:
                    raise LossbenchError(
                        f"dataset psma: the synthetic default cohort is not available ({exc}); set data=PATH"
                    ) from None
                self._root = Path(default_cohort()).resolve()
        return self._root

    @property
    def resolved_layout(self) -> str:
        if self._layout is None:
            if not self.root.is_dir():
                raise DatasetError(f"dataset psma: data folder {self.root} does not exist")
            self._layout = detect_layout(self.root) if self.layout == "auto" else self.layout
        return self._layout

    def cases(self, split: str | None = None) -> list[Case]:
        if self._cases is None:
            layout = self.resolved_layout
            discover = discover_nnunet if layout == "nnunet" else discover_autopet
            found = discover(self.root, self.test_fraction, self.test_seed)
            if not found:
                raise DatasetError(f"dataset psma: no cases found in {self.root} ({layout} layout)")
            self._cases = sorted(found, key=lambda c: c.id)
        if split is None:
            return list(self._cases)
        if split not in ("train", "test"):
            raise LossbenchError(f"split must be 'train' or 'test', got {split!r}")
        return [c for c in self._cases if c.split == split]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "root": str(self.root), "layout": self.resolved_layout,
                "label_geometry": self.label_geometry, "negative_suv_tolerance": self.negative_suv_tolerance,
                "notes": cohort_notes(self.notes, len(self.cases())) if self.notes else []}

    # -- validation ----------------------------------------------------------------------------
    def validate(self, workers: int | None = None) -> None:
        """Read every case (headers and data) and raise :class:`DatasetError` listing all problems.

        A successful validation is remembered under ``$LOSSBENCH_HOME/cache/validated/`` with every
        file's path, size and modification time; while none of them changes (and no case is added
        or removed), later runs skip the reading — a real cohort takes minutes to read, and every
        cell of a matrix validates its data. Any change makes it read everything again.

        Notes that do not stop a run (grids resampled at load time, negative SUV within the
        tolerance) are kept per case in ``self.notes`` and issued as one :class:`DatasetWarning`
        per kind for the whole cohort, with the number of cases (:func:`cohort_notes`).
        """
        cases = self.cases()
        if not any(c.split == "train" for c in cases):
            raise DatasetError(f"dataset psma: no training cases in {self.root}")
        ids = [c.id for c in cases]
        if len(set(ids)) != len(ids):
            dupe = next(i for i in ids if ids.count(i) > 1)
            raise DatasetError(f"dataset psma: case {dupe!r} is both a training and a test case in {self.root}")
        fingerprint = _fingerprint(cases, self.label_geometry, self.negative_suv_tolerance)
        record = _validation_record(fingerprint)
        cached = _read_json(record)
        if cached is not None and cached.get("fingerprint") == fingerprint:
            self.notes = list(cached.get("notes", []))  # every file unchanged since it passed
        else:
            workers = workers or max(1, min(4, os.cpu_count() or 1))
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda c: check_case(c, self.label_geometry, self.negative_suv_tolerance),
                                        cases))
            problems = [p for found, _ in results for p in found]
            self.notes = [n for _, found in results for n in found]
            if problems:
                raise DatasetError.from_problems(problems)
            _write_json_atomic(record, {"fingerprint": fingerprint, "notes": self.notes})
        for note in cohort_notes(self.notes, len(cases)):
            warnings.warn(note, DatasetWarning, stacklevel=2)

    # -- transforms ----------------------------------------------------------------------------
    def deterministic_transforms(self, stage: str, *, spacing: Sequence[float] = (2.0, 2.0, 2.0)) -> list:
        """PAPER.md §4.4 steps 1-6 (+ step 10 for ``val``/``infer``, which have no random part)."""
        import torch
        from monai.transforms import (
            CastToTyped,
            ConcatItemsd,
            CropForegroundd,
            DeleteItemsd,
            EnsureChannelFirstd,
            LoadImaged,
            Orientationd,
            ScaleIntensityd,
            Spacingd,
        )

        _check_stage(stage)
        spacing = parse_numbers(spacing, float, what="spacing")
        keys = [CT_KEY, PET_KEY, LABEL_KEY]
        missing_ok = stage == "infer"  # inference may run on studies without a label
        steps = [
            # squeeze_non_spatial_dims: an (x, y, z, 1) file loads as (x, y, z), as validation accepts it
            LoadImaged(keys, reader="NibabelReader", image_only=True, allow_missing_keys=missing_ok,
                       squeeze_non_spatial_dims=True),
            EnsureChannelFirstd(keys, channel_dim="no_channel", allow_missing_keys=missing_ok),
            __getattr__("AlignToPETd")([CT_KEY, LABEL_KEY], allow_missing_keys=True),
            CropForegroundd(keys, source_key=CT_KEY, margin=0, allow_smaller=True, allow_missing_keys=missing_ok),
            self._ct_scaling(),
            *([] if self.pet_scale == 1.0 else [ScaleIntensityd(PET_KEY, minv=None, maxv=None,
                                                                               factor=1.0 / self.pet_scale - 1.0)]),
            Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")),
                         allow_missing_keys=missing_ok),
            Spacingd(keys, pixdim=spacing, mode=("bilinear", "bilinear", "nearest"), allow_missing_keys=missing_ok),
        ]
        if stage != "train":
            steps += [
                ConcatItemsd([CT_KEY, PET_KEY], IMAGE_KEY, dim=0),
                DeleteItemsd([CT_KEY, PET_KEY]),
                CastToTyped(LABEL_KEY, dtype=torch.uint8, allow_missing_keys=True),
            ]
        return steps

    def _ct_scaling(self) -> Any:
        """CT to [0, 1]: min-max over the body crop (the reference), or a fixed HU window, clipped."""
        from monai.transforms import ScaleIntensityd, ScaleIntensityRanged

        if self.ct_window is None:
            return ScaleIntensityd(CT_KEY, minv=0.0, maxv=1.0)
        low, high = self.ct_window
        return ScaleIntensityRanged(CT_KEY, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)

    def random_transforms(
        self,
        stage: str,
        *,
        patch: Sequence[int] | None = None,
        pos_neg: tuple[float, float] = (4.0, 1.0),
        num_samples: int = 1,
        affine_prob: float = 0.5,
    ) -> list:
        """PAPER.md §4.4 steps 7-10 for ``train``; empty for ``val``/``infer``."""
        import torch
        from monai.transforms import (
            CastToTyped,
            ConcatItemsd,
            DeleteItemsd,
            RandAffined,
            RandCropByPosNegLabeld,
            ResizeWithPadOrCropd,
        )

        _check_stage(stage)
        if stage != "train":
            return []
        if patch is None:
            raise LossbenchError("the train transforms need a patch size (patch=96 or patch=(96, 96, 64))")
        patch = parse_numbers(patch, int, what="patch")  # a tuple from RunConfig passes through unchanged
        pos, neg = (float(v) for v in pos_neg)
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise LossbenchError(f"pos_neg={pos_neg}: both must be >= 0 and not both 0 (the paper uses 4,1)")
        if num_samples < 1:
            raise LossbenchError(f"num_samples={num_samples} must be at least 1")
        if not 0.0 <= affine_prob <= 1.0:
            raise LossbenchError(f"affine_prob={affine_prob} must be in [0, 1]")
        keys = [CT_KEY, PET_KEY, LABEL_KEY]
        return [
            RandCropByPosNegLabeld(
                keys, label_key=LABEL_KEY, spatial_size=patch, pos=pos, neg=neg, num_samples=num_samples,
                image_key=PET_KEY, image_threshold=0.0, allow_smaller=True,
            ),
            ResizeWithPadOrCropd(keys, spatial_size=patch, mode="constant"),
            RandAffined(
                keys, prob=affine_prob, spatial_size=patch, translate_range=(10, 10, 10),
                rotate_range=(0.0, 0.0, math.pi / 15), scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "bilinear", "nearest"), padding_mode="reflection", cache_grid=True,
            ),
            ConcatItemsd([CT_KEY, PET_KEY], IMAGE_KEY, dim=0),
            DeleteItemsd([CT_KEY, PET_KEY]),
            CastToTyped(LABEL_KEY, dtype=torch.int64),
        ]

    def transforms(
        self,
        stage: str,
        *,
        patch: Sequence[int] | None = None,
        spacing: Sequence[float] = (2.0, 2.0, 2.0),
        pos_neg: tuple[float, float] = (4.0, 1.0),
        num_samples: int = 1,
        affine_prob: float = 0.5,
    ):
        from monai.transforms import Compose

        steps = self.deterministic_transforms(stage, spacing=spacing)
        steps += self.random_transforms(stage, patch=patch, pos_neg=pos_neg, num_samples=num_samples,
                                        affine_prob=affine_prob)
        return Compose(steps)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise LossbenchError(f"unknown transform stage {stage!r}; use one of {', '.join(STAGES)}")

"""NIfTI input, case matching across folders, and atomic table output.

Reading
-------
:func:`read_image` loads a NIfTI file with nibabel. Arrays keep nibabel's (x, y, z) index order (the
reference's SimpleITK arrays transposed to (x, y, z) are the same thing); a trailing axis of length 1
(x, y, z, 1) is dropped. Masks are read with their stored dtype; PET is read as float64 SUV. The
voxel spacing in mm is the first three header zooms.

Matching cases
--------------
The ground-truth folder defines the cases: every ``<ID>.nii.gz`` (or ``<ID>.nii``) in it is one case.
For each case the prediction folder must hold ``<ID>.nii.gz`` (or ``.nii``) and the PET folder either
``<ID>.nii.gz`` or, nnU-Net style with PET as input channel 1, ``<ID>_0001.nii.gz`` (``.nii`` too).
A missing prediction or PET is an error that names the case(s); so is a PET folder holding both
forms for one case. Predictions without a ground truth are not evaluated (:func:`find_cases` returns
their IDs so that callers can report them).

Geometry
--------
Prediction, GT and PET of a case must have the same shape and affines that agree within
``affine_tol`` (absolute, mm, on every entry of the 4 × 4 affine; 1e-3 by default); otherwise the error
names the case and the disagreeing images. Spacing comes from the GT header.

Writing
-------
Tables are written as CSV (``.csv``) or Parquet (``.parquet``/``.pq``) chosen by the extension, always
through a temporary file in the destination folder that is renamed over the target with
:func:`os.replace` only when every table of the call has been written, so that an error never leaves
a partial or half-updated result behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossbench.errors import LossbenchError
from lossbench.fsio import atomic_paths

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CaseFiles",
    "Image",
    "check_geometry",
    "find_cases",
    "read_image",
    "table_format",
    "write_tables",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PET_CHANNEL_SUFFIX = "_0001"
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Image:
    """A NIfTI image: the (x, y, z) array, its 4 × 4 affine and its spacing in mm."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path


@dataclass(frozen=True)
class CaseFiles:
    """The three files of one case."""

    case_id: str
    pred: Path
    gt: Path
    pet: Path


def _case_id(path: Path) -> str | None:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def read_image(path: str | os.PathLike[str], *, kind: str = "mask") -> Image:
    """Read a NIfTI mask (``kind="mask"``, stored dtype) or PET (``kind="pet"``, float64)."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        if kind == "pet":
            array = np.asarray(img.get_fdata(dtype=np.float64))
        else:
            array = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise LossbenchError(f"file not found: {path}") from None
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise LossbenchError(f"cannot read NIfTI file {path}: {exc}") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise LossbenchError(f"{path} is not a 3-D image (shape {array.shape})")
    zooms = img.header.get_zooms()[:3]
    return Image(array=array, affine=np.asarray(img.affine, dtype=np.float64),
                 spacing=(float(zooms[0]), float(zooms[1]), float(zooms[2])), path=path)


def _nifti_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise LossbenchError(f"{what} folder does not exist or is not a folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case = _case_id(path)
        if case is None or not path.is_file():
            continue
        if case in found:
            raise LossbenchError(f"{what} folder {folder} holds both {found[case].name} and {path.name}")
        found[case] = path
    return found


def _short_list(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def find_cases(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    pet_dir: str | os.PathLike[str],
) -> tuple[list[CaseFiles], list[str]]:
    """Match the files of every GT case (see the module docstring).

    Returns the cases sorted by ID and the IDs of predictions that have no GT (not evaluated).
    """
    gts = _nifti_files(Path(gt_dir), "ground-truth")
    if not gts:
        raise LossbenchError(f"no NIfTI files (*.nii.gz, *.nii) in the ground-truth folder {gt_dir}")
    preds = _nifti_files(Path(pred_dir), "prediction")
    pets = _nifti_files(Path(pet_dir), "PET")

    no_pred = [c for c in gts if c not in preds]
    if no_pred:
        raise LossbenchError(
            f"missing prediction for case(s) {_short_list(no_pred)} (expected <ID>.nii.gz in {pred_dir})"
        )
    cases, no_pet, ambiguous = [], [], []
    for case, gt_path in gts.items():
        direct, channel = pets.get(case), pets.get(case + PET_CHANNEL_SUFFIX)
        if direct is not None and channel is not None:
            ambiguous.append(case)
        elif direct is None and channel is None:
            no_pet.append(case)
        else:
            cases.append(CaseFiles(case, preds[case], gt_path, direct or channel))  # type: ignore[arg-type]
    if no_pet:
        raise LossbenchError(
            f"missing PET for case(s) {_short_list(no_pet)} "
            f"(expected <ID>.nii.gz or <ID>{PET_CHANNEL_SUFFIX}.nii.gz in {pet_dir})"
        )
    if ambiguous:
        raise LossbenchError(
            f"PET folder {pet_dir} holds both <ID>.nii.gz and <ID>{PET_CHANNEL_SUFFIX}.nii.gz "
            f"for case(s) {_short_list(ambiguous)}"
        )
    extra = sorted(c for c in preds if c not in gts)
    return cases, extra


def check_geometry(case_id: str, images: dict[str, Image], *, affine_tol: float = 1e-3) -> None:
    """Raise LossbenchError unless all ``images`` (name -> Image) share shape and affine."""
    (ref_name, ref), *others = images.items()
    for name, img in others:
        if img.array.shape != ref.array.shape:
            raise LossbenchError(
                f"case {case_id!r}: geometry mismatch: {name} has shape {img.array.shape}, "
                f"{ref_name} has {ref.array.shape}"
            )
        diff = float(np.max(np.abs(img.affine - ref.affine)))
        if not diff <= affine_tol:
            raise LossbenchError(
                f"case {case_id!r}: geometry mismatch: the affines of {name} and {ref_name} differ "
                f"by up to {diff:.4g} (tolerance {affine_tol:g})"
            )


def table_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"parquet"`` from the file extension; LossbenchError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise LossbenchError(
            f"cannot tell the table format of {path}: use a .csv or .parquet extension"
        )
    return TABLE_FORMATS[suffix]


def _write(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        try:
            df.to_parquet(path, index=False)
        except ImportError as exc:
            raise LossbenchError(f"writing Parquet needs pyarrow or fastparquet: {exc}") from None


def write_tables(tables: Sequence[tuple[pd.DataFrame, str | os.PathLike[str]]]) -> None:
    """Write every (table, path) atomically: all to temporary files first, then rename them all.

    On any error the temporary files are removed and no target is touched.
    """
    jobs = [(df, Path(path), table_format(path)) for df, path in tables]
    targets = [p.resolve() for _, p, _ in jobs]
    if len(set(targets)) != len(targets):
        raise LossbenchError("two output tables would be written to the same file")
    try:
        for _, path, _ in jobs:
            path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_paths([path for _, path, _ in jobs]) as temps:
            for (df, _, fmt), tmp in zip(jobs, temps, strict=True):
                _write(df, tmp, fmt)
    except OSError as exc:
        raise LossbenchError(f"cannot write results: {exc}") from None

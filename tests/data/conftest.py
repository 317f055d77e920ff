"""Tiny synthetic PET/CT studies written as NIfTI files, in the nnU-Net raw and autoPET layouts.

A study is a body ellipsoid (CT 40 HU, air -1000 HU outside; PET SUV about 0.5 inside, 0
outside) with a bone rod (CT 400 HU) and spherical lesions (PET SUV 8, label 1) kept away
from the borders. Fixtures return small factories so that each test can break one file.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

SHAPE = (48, 48, 48)
SPACING = (2.0, 2.0, 2.0)


@dataclasses.dataclass
class Study:
    """Arrays (x, y, z) and the affine of one synthetic study."""

    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray
    affine: np.ndarray


def make_affine(spacing: Sequence[float] = SPACING, flip: Sequence[bool] = (False, False, False),
                origin: Sequence[float] = (-40.0, -40.0, -40.0)) -> np.ndarray:
    affine = np.eye(4)
    for axis, (step, flipped) in enumerate(zip(spacing, flip, strict=True)):
        affine[axis, axis] = -step if flipped else step
    affine[:3, 3] = origin
    return affine


def make_study(seed: int = 0, shape: Sequence[int] = SHAPE, spacing: Sequence[float] = SPACING,
               flip: Sequence[bool] = (False, False, False), n_lesions: int = 2, radius: float = 3.5) -> Study:
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    norm = ((grid - centre[:, None, None, None]) / (0.42 * np.asarray(shape, dtype=np.float32))[:, None, None, None])
    body = (norm**2).sum(0) <= 1.0
    ct = np.full(shape, -1000.0, np.float32)
    ct[body] = 40.0 + rng.normal(0, 5, body.sum()).astype(np.float32)
    rod = ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1] - shape[1] * 0.15) ** 2) <= (shape[0] * 0.06) ** 2
    ct[rod & body] = 400.0
    pet = np.zeros(shape, np.float32)
    pet[body] = np.abs(rng.normal(0.5, 0.1, body.sum())).astype(np.float32) + 0.05
    label = np.zeros(shape, np.uint8)
    # voxel radius per axis, so lesions stay spheres in mm when the spacing is anisotropic
    r_vox = radius * min(spacing) / np.asarray(spacing)
    margin = np.ceil(r_vox).astype(int) + np.maximum(4, np.asarray(shape) // 4)
    for _ in range(n_lesions):
        c = np.array([rng.integers(m, n - m) for m, n in zip(margin, shape, strict=True)], dtype=np.float32)
        ball = (((grid - c[:, None, None, None]) / r_vox[:, None, None, None]) ** 2).sum(0) <= 1.0
        label[ball & body] = 1
        pet[ball & body] = 8.0
    return Study(ct, pet, label, make_affine(spacing, flip))


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_nnunet_case(root: Path, case_id: str, study: Study, split: str = "train") -> dict[str, Path]:
    images, labels = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
    return {
        "ct": save(study.ct.astype(np.int16), study.affine, root / images / f"{case_id}_0000.nii.gz"),
        "pet": save(study.pet, study.affine, root / images / f"{case_id}_0001.nii.gz"),
        "label": save(study.label, study.affine, root / labels / f"{case_id}.nii.gz"),
    }


def write_autopet_study(folder: Path, study: Study) -> dict[str, Path]:
    return {
        "ct": save(study.ct.astype(np.int16), study.affine, folder / "CTres.nii.gz"),
        "pet": save(study.pet, study.affine, folder / "SUV.nii.gz"),
        "label": save(study.label, study.affine, folder / "SEG.nii.gz"),
    }


class Factory:
    """Writes cohorts under a pytest ``tmp_path``; studies are cached per (seed, kwargs)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._n = 0

    def folder(self, name: str) -> Path:
        self._n += 1
        path = self.tmp_path / f"{name}{self._n}"
        path.mkdir(parents=True)
        return path

    def nnunet(self, n_train: int = 7, n_test: int = 2, prefix: str = "PSMA-", **study_kwargs) -> Path:
        root = self.folder("nnunet")
        for i in range(n_train + n_test):
            split = "train" if i < n_train else "test"
            write_nnunet_case(root, f"{prefix}{i:03d}", make_study(seed=i, **study_kwargs), split)
        (root / "dataset.json").write_text(
            '{"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "lesion": 1}, '
            f'"numTraining": {n_train}, "file_ending": ".nii.gz"}}'
        )
        return root

    def autopet(self, patients: dict[str, int], nested: bool = True, **study_kwargs) -> Path:
        """``patients``: patient folder -> number of studies (two levels) or one study each (flat)."""
        root = self.folder("autopet")
        seed = 0
        for patient, n_studies in sorted(patients.items()):
            for s in range(n_studies if nested else 1):
                folder = root / patient / f"0{s + 1}-01-2020-NA-PET-CT Ganzkoerper {s}" if nested else root / patient
                write_autopet_study(folder, make_study(seed=seed, **study_kwargs))
                seed += 1
        return root


@pytest.fixture
def phantoms() -> types.SimpleNamespace:
    """The study helpers of this module, for tests that break or rewrite one file."""
    return types.SimpleNamespace(make_study=make_study, make_affine=make_affine, save=save,
                                 write_nnunet_case=write_nnunet_case)


@pytest.fixture
def cohorts(tmp_path) -> Factory:
    return Factory(tmp_path)


@pytest.fixture
def nnunet_root(cohorts) -> Path:
    """7 training and 2 test studies, 48^3 voxels at 2 mm, RAS."""
    return cohorts.nnunet()


@pytest.fixture
def one_torch_thread():
    """Run MONAI transforms on one torch thread: on small volumes, thread fan-out only costs time
    (a 10x slowdown when other processes share the two cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

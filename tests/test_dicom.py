"""``lossbench data dicom`` on small synthetic DICOM series written with pydicom: a planted SUV
volume comes back within 1 % at the right physical place, whatever the file order, the per-slice
slopes, the decay-correction convention, the half-life or the patient position."""

from __future__ import annotations

import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from tests.dicom_writers import DELTA_T, HALF_LIFE, ORIGIN, SHAPE, SPACING, WEIGHT, planted_suv, write_study  # noqa: E402


def _convert(run_cli, src, out):
    return run_cli("data", "dicom", "--in", str(src), "--out", str(out), "--json")


@pytest.mark.parametrize("decay,orientation", [("START", (1, 0, 0, 0, 1, 0)), ("ADMIN", (-1, 0, 0, 0, 1, 0)),
                                               ("START", (1, 0, 0, 0, -1, 0))])
def test_planted_suv_comes_back_within_one_percent_at_the_right_place(run_cli, tmp_path, decay, orientation):
    src = tmp_path / "dicom"
    src.mkdir()
    write_study(src, decay=decay, orientation=orientation)
    done = _convert(run_cli, src, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    (study,) = json.loads(done.stdout)["studies"]
    expected_decay = 2.0 ** (-DELTA_T / HALF_LIFE) if decay == "START" else 1.0
    assert study["decay_factor"] == pytest.approx(expected_decay, rel=1e-9)
    assert study["half_life_s"] == HALF_LIFE and study["weight_kg"] == WEIGHT and study["delta_t_s"] == DELTA_T

    pet = sitk.ReadImage(str(tmp_path / "out" / "imagesTr" / "P1_0001.nii.gz"))
    ct = sitk.ReadImage(str(tmp_path / "out" / "imagesTr" / "P1_0000.nii.gz"))
    assert pet.GetSize() == ct.GetSize() == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert pet.GetSpacing() == pytest.approx((SPACING[0], SPACING[1], SPACING[2]))
    got = sitk.GetArrayFromImage(pet)
    assert np.allclose(got, planted_suv(), rtol=0.01)  # every voxel within 1 %
    # the hot voxel sits where it was planted (DICOM LPS), exactly
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    planted = np.array(ORIGIN) + row * SPACING[0] * 5 + col * SPACING[1] * 3 + np.cross(row, col) * SPACING[2] * 2
    hot = np.unravel_index(np.argmax(got), got.shape)
    assert np.allclose(pet.TransformIndexToPhysicalPoint(tuple(int(i) for i in hot[::-1])), planted, atol=1e-4)
    assert sitk.GetArrayFromImage(ct).max() == pytest.approx(40.0, abs=0.5)


def test_a_missing_tag_is_one_line_naming_the_study_and_nothing_is_written(run_cli, tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    study = write_study(src, drop=("PatientWeight",))
    done = _convert(run_cli, src, tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and study in done.stderr and "PatientWeight" in done.stderr
    assert not (tmp_path / "out").exists()

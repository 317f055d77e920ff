"""``lossbench data dicom --seg``: labels from an RTSTRUCT drawn on the PET series.

A tiny synthetic study (tests/dicom_writers.py) gets a pydicom-written RTSTRUCT whose ROIs
outline exactly the planted hot voxels ("Lesion 1": the 2×2×2 block, "bone LESION": the hottest
voxel) plus one ROI that is not a lesion ("Liver"). The label must be those voxels on the PET grid
(compared with the converted SUV image itself, so any orientation error shows), the ROI choice
must follow --roi, and a study whose ROIs do not match is one line and writes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from tests.dicom_writers import write_rtstruct, write_study  # noqa: E402


def _study_with_rtstruct(folder, orientation):
    study = write_study(folder, orientation=orientation)
    pet = next(pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("PT-*.dcm")))
    write_rtstruct(folder, orientation, study=study, pet_series=str(pet.SeriesInstanceUID))
    return study


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 1, 0)])
def test_rtstruct_lesion_rois_become_the_label_on_the_pet_grid(run_cli, tmp_path, orientation):
    src = tmp_path / "dicom"
    src.mkdir()
    _study_with_rtstruct(src, orientation)
    done = run_cli("data", "dicom", "--in", str(src), "--out", str(tmp_path / "out"), "--seg", str(src), "--json")
    assert done.returncode == 0, done.stderr
    (study,) = json.loads(done.stdout)["studies"]
    assert study["label_rois"] == ["Lesion 1", "bone LESION"] and study["label_voxels"] == 9
    label = sitk.ReadImage(str(tmp_path / "out" / "labelsTr" / "P1.nii.gz"))
    pet = sitk.ReadImage(str(tmp_path / "out" / "imagesTr" / "P1_0001.nii.gz"))
    assert label.GetSize() == pet.GetSize() and label.GetOrigin() == pet.GetOrigin()
    assert label.GetDirection() == pet.GetDirection() and label.GetSpacing() == pet.GetSpacing()
    suv = sitk.GetArrayFromImage(pet)
    assert np.array_equal(sitk.GetArrayFromImage(label), (suv > 2.0).astype(np.uint8))  # the planted lesions


def test_roi_option_and_a_study_without_matching_rois(run_cli, tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    _study_with_rtstruct(src, (1, 0, 0, 0, 1, 0))
    liver = run_cli("data", "dicom", "--in", str(src), "--out", str(tmp_path / "liver"), "--seg", str(src),
                    "--roi", "LIVER", "--json")
    assert liver.returncode == 0, liver.stderr
    (study,) = json.loads(liver.stdout)["studies"]
    assert study["label_rois"] == ["Liver"] and study["label_voxels"] == 3 * 4

    none = run_cli("data", "dicom", "--in", str(src), "--out", str(tmp_path / "none"), "--seg", str(src),
                   "--roi", "tumour")
    assert none.returncode == 1 and none.stderr.count("\n") == 1, none.stderr
    assert "contains 'tumour'" in none.stderr and "Lesion 1" in none.stderr and "study " in none.stderr
    assert not (tmp_path / "none").exists()  # nothing half-written

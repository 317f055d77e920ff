"""``lossbench data dicom --seg``: labels from an RTSTRUCT drawn on the PET series.

A tiny synthetic study (tests/test_dicom.py's writer) gets a pydicom-written RTSTRUCT whose ROIs
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

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from tests.test_dicom import ORIGIN, SPACING, write_study  # noqa: E402

RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def _square(orientation, k: int, i0: float, i1: float, j0: float, j1: float) -> list[float]:
    """A closed contour on slice k around the voxel centres i0 < i < i1, j0 < j < j1 (LPS, mm)."""
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    corners = [(i0, j0), (i1, j0), (i1, j1), (i0, j1)]
    points = [np.array(ORIGIN) + i * SPACING[0] * row + j * SPACING[1] * col + k * SPACING[2] * normal
              for i, j in corners]
    return [float(x) for p in points for x in p]


def write_rtstruct(folder, orientation, *, study: str, pet_series: str, frame: str = "") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTSTRUCT", study, generate_uid()
    ds.PatientID = "P1"
    series = Dataset()
    series.SeriesInstanceUID = pet_series
    ref_study = Dataset()
    ref_study.RTReferencedSeriesSequence = [series]
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame or generate_uid()
    ref_frame.RTReferencedStudySequence = [ref_study]
    ds.ReferencedFrameOfReferenceSequence = [ref_frame]
    rois = {1: ("Lesion 1", [_square(orientation, k, 0.5, 2.5, 0.5, 2.5) for k in (1, 2)]),
            2: ("bone LESION", [_square(orientation, 2, 4.5, 5.5, 2.5, 3.5)]),
            3: ("Liver", [_square(orientation, 0, 3.5, 6.5, 0.5, 4.5)])}
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, (name, contours) in rois.items():
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for data in contours:
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(data) // 3
            contour.ContourData = data
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    ds.save_as(folder / "rtstruct.dcm", enforce_file_format=True)


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

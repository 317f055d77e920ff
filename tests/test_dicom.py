"""``lossbench data dicom`` on small synthetic DICOM series written with pydicom: a planted SUV
volume comes back within 1 % at the right physical place, whatever the file order, the per-slice
slopes, the decay-correction convention, the half-life or the patient position."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

SHAPE = (5, 6, 8)  # slices, rows, columns
SPACING = (4.0, 3.0, 5.0)  # column (x), row (y), slice gap, mm
ORIGIN = (-10.0, -20.0, 30.0)  # LPS of the first voxel of the first slice along the normal
WEIGHT, DOSE, HALF_LIFE = 80.0, 150e6, 4057.2  # kg, Bq, s (Ga-68: not the F-18 a converter might assume)
DELTA_T = 3600.0  # s from injection to series start


def planted_suv() -> np.ndarray:
    suv = np.full(SHAPE, 0.5)
    suv[2, 3, 5] = 12.0  # the hot voxel
    suv[1:3, 1:3, 1:3] = 4.0
    return suv


def _write_series(folder, modality, values, *, study, patient, orientation, slopes, extra):
    series = generate_uid()
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    paths = []
    for k in range(values.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128" if modality == "PT" else "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study, series
        ds.PatientID, ds.PatientName = patient, patient
        ds.ImageOrientationPatient = [float(x) for x in orientation]
        position = np.array(ORIGIN) + normal * SPACING[2] * k
        ds.ImagePositionPatient = [float(x) for x in position]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]
        ds.Rows, ds.Columns = values.shape[1], values.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        slope, intercept = slopes[k]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.round((values[k] - intercept) / slope).astype(np.int16).tobytes()
        for key, value in extra.items():
            setattr(ds, key, value)
        path = folder / f"{modality}-{k}-{random.random():.6f}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_study(folder, *, patient="P1", decay="START", orientation=(1, 0, 0, 0, 1, 0), drop=()):
    study = generate_uid()
    suv = planted_suv()
    decay_factor = 2.0 ** (-DELTA_T / HALF_LIFE) if decay == "START" else 1.0
    activity = suv * DOSE * decay_factor / (WEIGHT * 1000.0)  # Bq/mL
    slopes = [(float(activity[k].max()) / 20000.0 * (1 + 0.37 * k), 0.0) for k in range(SHAPE[0])]  # differing
    info = Dataset()
    info.RadionuclideTotalDose, info.RadionuclideHalfLife = DOSE, HALF_LIFE
    info.RadiopharmaceuticalStartTime = "090000.00"
    pet = {"Units": "BQML", "DecayCorrection": decay, "SeriesDate": "20240102", "SeriesTime": "100000",
           "PatientWeight": WEIGHT, "RadiopharmaceuticalInformationSequence": [info]}
    for key in drop:
        pet.pop(key)
    ct = np.full(SHAPE, -1000.0)
    ct[:, 1:5, 1:7] = 40.0
    paths = _write_series(folder, "PT", activity, study=study, patient=patient, orientation=orientation,
                          slopes=slopes, extra=pet)
    paths += _write_series(folder, "CT", ct, study=study, patient=patient, orientation=orientation,
                           slopes=[(1.0, -1024.0)] * SHAPE[0], extra={})
    random.shuffle(paths)  # file names say nothing about the order
    return study


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

"""Small synthetic DICOM PET/CT studies written with pydicom, shared by the ``lossbench data dicom``
tests (tests/test_dicom.py, tests/test_dicom_labels.py, tests/test_dicom_seg.py).

A study is one PET series (activity in Bq/mL, a different ``RescaleSlope`` per slice) and one CT
series in one ``FrameOfReferenceUID``, the files shuffled; the planted SUV volume and the geometry
below are what the converted NIfTI must give back. ``write_rtstruct`` adds a structure set drawn on
the planted voxels.
"""

from __future__ import annotations

import random

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SHAPE = (5, 6, 8)  # slices, rows, columns
SPACING = (4.0, 3.0, 5.0)  # column (x), row (y), slice gap, mm
ORIGIN = (-10.0, -20.0, 30.0)  # LPS of the first voxel of the first slice along the normal
WEIGHT, DOSE, HALF_LIFE = 80.0, 150e6, 4057.2  # kg, Bq, s (Ga-68: not the F-18 a converter might assume)
DELTA_T = 3600.0  # s from injection to series start
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def planted_suv() -> np.ndarray:
    suv = np.full(SHAPE, 0.5)
    suv[2, 3, 5] = 12.0  # the hot voxel
    suv[1:3, 1:3, 1:3] = 4.0
    return suv


def write_series(folder, modality, values, *, study, patient, orientation, slopes, extra, spacing=SPACING,
                 origin=ORIGIN):
    """One single-frame file per slice of ``values`` (slices, rows, columns); ``spacing`` is x, y, gap."""
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
        ds.PatientID, ds.PatientName = patient, f"{patient}^"  # a one-component person name
        ds.ImageOrientationPatient = [float(x) for x in orientation]
        position = np.array(origin) + normal * spacing[2] * k
        ds.ImagePositionPatient = [float(x) for x in position]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
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


def write_study(folder, *, patient="P1", decay="START", orientation=(1, 0, 0, 0, 1, 0), drop=(), ct_zoom=1):
    """A PET/CT study under ``folder``; returns its StudyInstanceUID. ``ct_zoom`` > 1 gives the CT a
    finer in-plane grid (pixel spacing / ct_zoom), shifted by a quarter of its pixel along the rows and
    columns: CT voxel (j·zoom, i·zoom) is the nearest to PET voxel (j, i), a quarter CT voxel off."""
    study = generate_uid()
    suv = planted_suv()
    decay_factor = 2.0 ** (-DELTA_T / HALF_LIFE) if decay == "START" else 1.0
    activity = suv * DOSE * decay_factor / (WEIGHT * 1000.0)  # Bq/mL
    slopes = [(float(activity[k].max()) / 20000.0 * (1 + 0.37 * k), 0.0) for k in range(SHAPE[0])]  # differing
    info = Dataset()
    info.RadionuclideTotalDose, info.RadionuclideHalfLife = DOSE, HALF_LIFE
    info.RadiopharmaceuticalStartTime = "090000.00"
    # patient / study attributes a derived object (highdicom's SEG) copies; one frame of reference
    common = {"FrameOfReferenceUID": generate_uid(), "StudyDate": "20240102", "StudyTime": "090000",
              "StudyID": "1", "AccessionNumber": "", "ReferringPhysicianName": "", "PatientBirthDate": "",
              "PatientSex": "O"}
    pet = {**common, "Units": "BQML", "DecayCorrection": decay, "SeriesDate": "20240102", "SeriesTime": "100000",
           "PatientWeight": WEIGHT, "RadiopharmaceuticalInformationSequence": [info]}
    for key in drop:
        pet.pop(key)
    ct = np.full(SHAPE, -1000.0)
    ct[:, 1:5, 1:7] = 40.0
    ct = np.repeat(np.repeat(ct, ct_zoom, axis=1), ct_zoom, axis=2)
    paths = write_series(folder, "PT", activity, study=study, patient=patient, orientation=orientation,
                         slopes=slopes, extra=pet)
    ct_spacing = (SPACING[0] / ct_zoom, SPACING[1] / ct_zoom, SPACING[2])
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    ct_origin = (np.array(ORIGIN) - (row * ct_spacing[0] + col * ct_spacing[1]) / 4 if ct_zoom > 1
                 else np.array(ORIGIN))
    paths += write_series(folder, "CT", ct, study=study, patient=patient, orientation=orientation,
                          slopes=[(1.0, -1024.0)] * SHAPE[0], extra=common, spacing=ct_spacing,
                          origin=tuple(float(x) for x in ct_origin))
    random.shuffle(paths)  # file names say nothing about the order
    return study


def _square(orientation, k: int, i0: float, i1: float, j0: float, j1: float) -> list[float]:
    """A closed contour on slice k around the voxel centres i0 < i < i1, j0 < j < j1 (LPS, mm)."""
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    corners = [(i0, j0), (i1, j0), (i1, j1), (i0, j1)]
    points = [np.array(ORIGIN) + i * SPACING[0] * row + j * SPACING[1] * col + k * SPACING[2] * normal
              for i, j in corners]
    return [float(x) for p in points for x in p]


def write_rtstruct(folder, orientation, *, study: str, pet_series: str, frame: str = "") -> None:
    """``folder/rtstruct.dcm``: "Lesion 1" (the 2×2×2 block), "bone LESION" (the hottest voxel) and
    "Liver" (3×4 voxels of slice 0), drawn on ``pet_series``."""
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

"""DICOM PET/CT -> the nnU-Net raw layout, PET in SUV body weight (``lossbench data dicom``).

Series are found by ``SeriesInstanceUID`` (the order of the files on disk does not matter), grouped
per study (``StudyInstanceUID``); each study needs exactly one CT and one PET (``Modality PT``) image
series. Slices are ordered along the slice normal (row × column direction cosines), so head-first
and feet-first acquisitions give the same patient geometry; every slice's own ``RescaleSlope`` /
``RescaleIntercept`` is applied (PET slopes differ per slice).

SUV body weight (PAPER.md §4.2)::

    SUV = activity concentration [Bq/mL] × weight [g] / (injected dose [Bq] × decay)

- ``Units`` must be ``BQML``. Vendor cases: Philips ``CNTS`` images with the private SUV scale
  factor (7053,1000) are converted with it (SUV = rescaled value × factor); ``GML`` is SUV already.
- decay: with ``DecayCorrection START`` the images are decay corrected to the series start, so the
  dose is decayed from the radiopharmaceutical start time to ``SeriesTime`` (``SeriesDate``; the
  start date from ``RadiopharmaceuticalStartDateTime`` when present, else the series date):
  decay = 2^(−Δt / T½), with T½ the ``RadionuclideHalfLife`` tag (never an assumed F-18 or Ga-68);
  with ``ADMIN`` they are corrected to the administration time already (decay = 1). ``NONE`` is
  refused (per-slice correction needs frame reference times).
- weight ``PatientWeight`` (kg), dose ``RadionuclideTotalDose`` (Bq), start time, half-life from
  ``RadiopharmaceuticalInformationSequence``. A missing one is one line naming the study and the tag.

The CT (HU) is resampled onto the PET grid (linear, padding −1024 HU, as the reference). Output per
study: ``imagesTr/<ID>_0000.nii.gz`` (CT), ``<ID>_0001.nii.gz`` (PET, SUV) and ``manifest.json``
(weight, dose, times, half-life, decay factor per study). The output folder appears only complete.

Labels (``seg``: a folder of RTSTRUCT and/or DICOM SEG files, which may be ``--in`` itself), matched
to each study by UIDs, never by file order:

- RTSTRUCT: one of the study's ``StudyInstanceUID`` whose contours are drawn on its PET series (the
  referenced series, or the PET's frame of reference). The ROIs included are those whose ``ROIName``
  contains ``roi`` in any case (default ``lesion``: "Lesion 1", "bone_lesion", "LESION"; ``--roi``
  changes it); their closed planar contours are filled on the PET slices (voxel centres inside the
  polygon, even-odd rule, holes as drawn).
- SEG (read with highdicom): one whose referenced series (``ReferencedSeriesSequence``) is the study's
  PET or CT series (a SEG referencing no series: the PET's ``FrameOfReferenceUID``). The segments
  included are those whose ``SegmentLabel`` contains ``roi`` in any case (the same rule). A BINARY or
  LABELMAP segment is its set voxels; a FRACTIONAL one (probability or occupancy) its voxels of
  fraction >= 0.5. The frames are placed by their plane positions (``ImagePositionPatient``), in any
  order, slices without a frame empty, and mapped onto the PET grid nearest-neighbour (exact for a
  SEG on the PET's grid; a SEG on the CT's grid is resampled). A segment wholly outside the PET's
  field of view is refused.

The included ROIs or segments are united into ``labelsTr/<ID>.nii.gz`` (uint8 0/1, the PET's grid and
header); the manifest records per study ``label_from`` (RTSTRUCT or SEG), the file, the ROIs
(``label_rois``) or segments (``label_segments``: number, label, voxels on the PET grid) and
``label_voxels``. One line naming the study, and no output, when: it has neither label file; more than
one RTSTRUCT, or more than one SEG, fits it; it has both an RTSTRUCT and a SEG (one rule, no silent
choice: keep one of them in ``--seg``); a SEG of the study references a series that is not its PET or
CT; no ROI or segment matches ``roi`` (the line lists the names there are).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError

__all__ = ["DEFAULT_ROI", "FRACTION_INCLUDED", "convert", "suv_factor"]

#: ROIs (RTSTRUCT) or segments (SEG) whose name contains this (any case) are the lesion label.
DEFAULT_ROI = "lesion"

#: A voxel of a FRACTIONAL SEG segment is in the label when its fraction is at least this.
FRACTION_INCLUDED = 0.5

PHILIPS_SUV_FACTOR = (0x7053, 0x1000)


class DicomError(LossbenchError):
    """A study cannot be converted (one line naming the study and the tag)."""


@dataclasses.dataclass
class Series:
    uid: str
    modality: str
    study: str
    files: list[Path]
    first: Any  # one dataset's header


def _scan(folder: Path) -> dict[str, dict[str, Series]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    studies: dict[str, dict[str, Series]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "SeriesInstanceUID" not in ds or "StudyInstanceUID" not in ds:
            continue
        study = studies.setdefault(str(ds.StudyInstanceUID), {})
        series = study.setdefault(str(ds.SeriesInstanceUID), Series(
            str(ds.SeriesInstanceUID), str(getattr(ds, "Modality", "")), str(ds.StudyInstanceUID), [], ds))
        series.files.append(path)
    return studies


def _time(value: str, date: str, what: str, study: str) -> dt.datetime:
    value, date = str(value or "").strip(), str(date or "").strip()
    if not value or not date:
        raise DicomError(f"study {study}: {what} is missing")
    frac = value.split(".")
    hhmmss = frac[0].ljust(6, "0")
    micro = int((frac[1] + "000000")[:6]) if len(frac) > 1 and frac[1] else 0
    return dt.datetime.strptime(date[:8] + hhmmss[:6], "%Y%m%d%H%M%S").replace(microsecond=micro)


def suv_factor(ds: Any, study: str) -> tuple[float, dict[str, Any]]:
    """The factor from the PET's rescaled values to SUV body weight, and what it was made of."""
    units = str(getattr(ds, "Units", "")).upper()
    facts: dict[str, Any] = {"units": units}
    if units == "GML":
        return 1.0, {**facts, "note": "Units GML: SUV already"}
    if units == "CNTS" and PHILIPS_SUV_FACTOR in ds:
        factor = float(ds[PHILIPS_SUV_FACTOR].value)
        return factor, {**facts, "philips_suv_scale_factor": factor}
    if units != "BQML":
        raise DicomError(f"study {study}: PET Units is {units or 'missing'!s}, not BQML (tag Units (0054,1001))")
    weight = getattr(ds, "PatientWeight", None)
    if not weight or float(weight) <= 0:
        raise DicomError(f"study {study}: PatientWeight (0010,1030) is missing or zero")
    info = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not info:
        raise DicomError(f"study {study}: RadiopharmaceuticalInformationSequence (0054,0016) is missing")
    info = info[0]
    dose = getattr(info, "RadionuclideTotalDose", None)
    if not dose or float(dose) <= 0:
        raise DicomError(f"study {study}: RadionuclideTotalDose (0018,1074) is missing or zero")
    half_life = getattr(info, "RadionuclideHalfLife", None)
    if not half_life or float(half_life) <= 0:
        raise DicomError(f"study {study}: RadionuclideHalfLife (0018,1075) is missing or zero")
    correction = str(getattr(ds, "DecayCorrection", "")).upper()
    series = _time(getattr(ds, "SeriesTime", ""), getattr(ds, "SeriesDate", ""), "SeriesTime/SeriesDate", study)
    start_dt = str(getattr(info, "RadiopharmaceuticalStartDateTime", "") or "")
    if start_dt:
        start = _time(start_dt[8:], start_dt[:8], "RadiopharmaceuticalStartDateTime", study)
    else:
        start = _time(getattr(info, "RadiopharmaceuticalStartTime", ""), getattr(ds, "SeriesDate", ""),
                      "RadiopharmaceuticalStartTime (0018,1072)", study)
    delta = (series - start).total_seconds()
    if correction == "START":
        decay = 2.0 ** (-delta / float(half_life))
    elif correction == "ADMIN":
        decay = 1.0
    else:
        raise DicomError(f"study {study}: DecayCorrection (0054,1102) is {correction or 'missing'}; START or ADMIN "
                         "is needed")
    factor = float(weight) * 1000.0 / (float(dose) * decay)
    return factor, {**facts, "weight_kg": float(weight), "dose_bq": float(dose), "half_life_s": float(half_life),
                    "decay_correction": correction, "injection": start.isoformat(), "series": series.isoformat(),
                    "delta_t_s": delta, "decay_factor": decay, "suv_factor": factor}


def _volume(series: Series) -> Any:
    """The series as a SimpleITK image (float32, rescaled per slice), slices along the normal."""
    import numpy as np
    import pydicom
    import SimpleITK as sitk

    slices = [pydicom.dcmread(p) for p in series.files]
    slices = [s for s in slices if "PixelData" in s]
    if len(slices) < 2:
        raise DicomError(f"study {series.study}: {series.modality} series {series.uid} has fewer than 2 slices")
    orient = np.array(slices[0].ImageOrientationPatient, float)
    row, col = orient[:3], orient[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    pos = np.array([np.dot(normal, np.array(s.ImagePositionPatient, float)) for s in slices])
    gaps = np.diff(pos)
    if np.any(gaps <= 1e-6) or np.ptp(gaps) > 1e-3 * max(abs(gaps.mean()), 1):
        raise DicomError(f"study {series.study}: {series.modality} series {series.uid} has uneven or repeated "
                         "slice positions (ImagePositionPatient)")
    data = np.stack([s.pixel_array.astype(np.float64) * float(getattr(s, "RescaleSlope", 1) or 1)
                     + float(getattr(s, "RescaleIntercept", 0) or 0) for s in slices])
    image = sitk.GetImageFromArray(data.astype(np.float32))  # (z, y, x)
    spacing = [float(x) for x in slices[0].PixelSpacing]
    image.SetSpacing((spacing[1], spacing[0], float(gaps.mean())))
    image.SetOrigin(tuple(float(x) for x in slices[0].ImagePositionPatient))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image, slices[0]


def _rtstructs_on(rtstructs: list[Path], pet: Series, study: str) -> list[tuple[Path, Any]]:
    """The RTSTRUCT files of the study drawn on its PET series (referenced series or frame of reference)."""
    import pydicom

    found = []
    for path in rtstructs:
        ds = pydicom.dcmread(path)
        if str(getattr(ds, "StudyInstanceUID", "")) != study:
            continue
        refs = {str(s.SeriesInstanceUID) for f in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
                for st in getattr(f, "RTReferencedStudySequence", []) for s in getattr(st, "RTReferencedSeriesSequence", [])}
        frames = {str(f.FrameOfReferenceUID) for f in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
                  if "FrameOfReferenceUID" in f}
        if pet.uid in refs or (not refs and str(getattr(pet.first, "FrameOfReferenceUID", "")) in frames):
            found.append((path, ds))
    return found


def _rtstruct_label(path: Path, ds: Any, pet_img: Any, roi: str, study: str) -> tuple[Any, dict[str, Any]]:
    """The union of the matching ROIs' contours of the study's RTSTRUCT, filled on the PET grid."""
    import numpy as np
    import SimpleITK as sitk
    from matplotlib.path import Path as Polygon

    names = {int(r.ROINumber): str(r.ROIName) for r in getattr(ds, "StructureSetROISequence", [])}
    chosen = {number for number, name in names.items() if roi.lower() in name.lower()}
    if not chosen:
        raise DicomError(f"study {study}: no ROI name in {path.name} contains {roi!r} (any case); ROIs: "
                         f"{', '.join(sorted(names.values())) or 'none'}; choose them with --roi")
    size = pet_img.GetSize()  # (x, y, z)
    mask = np.zeros(size[::-1], np.uint8)  # (z, y, x)
    jj, ii = np.mgrid[0:size[1], 0:size[0]]
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    for item in getattr(ds, "ROIContourSequence", []):
        if int(item.ReferencedROINumber) not in chosen:
            continue
        for contour in getattr(item, "ContourSequence", []):
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            index = np.array([pet_img.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points])
            k = int(round(float(np.mean(index[:, 2]))))
            if len(points) < 3 or not 0 <= k < size[2] or np.ptp(index[:, 2]) > 0.5:
                raise DicomError(f"study {study}: a contour of ROI {names[int(item.ReferencedROINumber)]!r} is not "
                                 "on a PET slice (ContourData)")
            inside = Polygon(index[:, :2]).contains_points(centres).reshape(size[1], size[0])
            mask[k] ^= inside  # even-odd: a contour inside another is a hole
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(pet_img)
    return label, {"label_from": "RTSTRUCT", "label_file": path.name, "label_rois": sorted(names[n] for n in chosen),
                   "label_voxels": int(mask.sum())}


@dataclasses.dataclass
class SegRef:
    """What matching needs of one DICOM SEG file (read by highdicom)."""

    path: Path
    study: str
    series: set[str]  # the referenced (source) series
    frame: str  # FrameOfReferenceUID


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise LossbenchError("reading DICOM SEG labels needs highdicom: pip install 'lossbench[dicom]'") from exc
    return highdicom


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: What highdicom raises on a file it cannot read as a Segmentation, or frames that are no volume.
_HD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError, OSError)


def _seg_refs(files: list[Path]) -> list[SegRef]:
    """Study, referenced series and frame of reference of each SEG file (frames not read yet)."""
    if not files:
        return []  # highdicom is needed only when there is a SEG
    hd = _highdicom()
    refs = []
    for path in files:
        try:
            seg = hd.seg.segread(path, lazy_frame_retrieval=True)
            series = {str(uids[1]) for uids in seg.get_source_image_uids()}
        except _HD_ERRORS as exc:
            raise DicomError(f"SEG {path} under --seg cannot be read by highdicom: {_one_line(exc)}") from exc
        refs.append(SegRef(path, str(getattr(seg, "StudyInstanceUID", "")), series,
                           str(getattr(seg, "FrameOfReferenceUID", "") or "")))
    return refs


def _segs_on(segs: list[SegRef], pet: Series, ct: Series, study: str) -> tuple[list[tuple[SegRef, Series]], list[SegRef]]:
    """The SEG files referencing the study's PET or CT series (or, referencing none, the PET's frame of
    reference), each with that series; and the other SEG files of the study (they reference other series)."""
    pet_frame = str(getattr(pet.first, "FrameOfReferenceUID", "") or "")
    found, foreign = [], []
    for ref in segs:
        on = pet if pet.uid in ref.series else ct if ct.uid in ref.series else None
        if on is None and not ref.series and ref.frame and ref.frame == pet_frame:
            on = pet
        if on is not None:
            frame = str(getattr(on.first, "FrameOfReferenceUID", "") or "")
            if ref.frame and frame and ref.frame != frame:
                raise DicomError(f"study {study}: SEG {ref.path.name} references its {on.modality} series {on.uid} "
                                 f"but has another FrameOfReferenceUID ({ref.frame}, the series has {frame})")
            found.append((ref, on))
        elif ref.study == study:
            foreign.append(ref)
    return found, foreign


def _seg_label(ref: SegRef, on: Series, pet_img: Any, roi: str, study: str) -> tuple[Any, dict[str, Any]]:
    """The union of the SEG's segments whose label contains ``roi``, placed by the frames' plane positions
    and mapped nearest-neighbour onto the PET grid (FRACTIONAL: fraction >= 0.5)."""
    import numpy as np
    import SimpleITK as sitk

    hd = _highdicom()
    name = ref.path.name
    try:
        seg = hd.seg.segread(ref.path)
        labels = {int(n): str(seg.get_segment_description(n).segment_label) for n in seg.segment_numbers}
        kind = seg.segmentation_type.value
    except _HD_ERRORS as exc:
        raise DicomError(f"study {study}: SEG {name} cannot be read by highdicom: {_one_line(exc)}") from exc
    chosen = [n for n, label in sorted(labels.items()) if roi.lower() in label.lower()]
    if not chosen:
        raise DicomError(f"study {study}: no segment label in SEG {name} contains {roi!r} (any case); segments: "
                         f"{', '.join(sorted(labels.values())) or 'none'}; choose them with --roi")
    try:
        volume = seg.get_volume(segment_numbers=chosen, combine_segments=False, rescale_fractional=True)
    except _HD_ERRORS as exc:
        raise DicomError(f"study {study}: the frames of SEG {name} do not form a regular 3D volume "
                         f"({_one_line(exc)})") from exc
    mask = np.zeros(pet_img.GetSize()[::-1], np.uint8)  # (z, y, x)
    segments = []
    for number in chosen:
        values = volume.get_channel(ReferencedSegmentNumber=number).array  # (slice, row, column) of the SEG
        inside = (values >= FRACTION_INCLUDED) if kind == "FRACTIONAL" else (values > 0)
        image = sitk.GetImageFromArray(inside.astype(np.uint8).transpose(2, 1, 0))  # sitk x = the SEG's axis 0
        image.SetSpacing(tuple(float(x) for x in volume.spacing))
        image.SetOrigin(tuple(float(x) for x in volume.position))
        image.SetDirection(tuple(float(x) for x in np.asarray(volume.direction).ravel()))
        on_pet = sitk.GetArrayFromImage(sitk.Resample(image, pet_img, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                      0, sitk.sitkUInt8))
        if inside.any() and not on_pet.any():
            raise DicomError(f"study {study}: segment {labels[number]!r} of SEG {name} lies outside the PET's field "
                             "of view")
        segments.append({"number": number, "label": labels[number], "voxels": int(on_pet.sum())})
        mask |= on_pet
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(pet_img)
    return label, {"label_from": "SEG", "label_file": name, "label_series": on.uid, "label_series_modality": on.modality,
                   "label_seg_type": kind, "label_segments": segments, "label_voxels": int(mask.sum())}


def _label(rtstructs: list[Path], segs: list[SegRef], pet: Series, ct: Series, pet_img: Any, roi: str,
           study: str) -> tuple[Any, dict[str, Any]]:
    """The study's label from its one RTSTRUCT or its one SEG under --seg (both: refused)."""
    on_rt = _rtstructs_on(rtstructs, pet, study)
    on_seg, foreign = _segs_on(segs, pet, ct, study)
    if on_rt and on_seg:
        raise DicomError(f"study {study}: both RTSTRUCT {on_rt[0][0].name} and SEG {on_seg[0][0].path.name} under "
                         "--seg label it; keep one of them in the --seg folder")
    if len(on_rt) > 1:
        raise DicomError(f"study {study}: {len(on_rt)} RTSTRUCT files drawn on its PET series {pet.uid} under "
                         "--seg; exactly one is needed")
    if len(on_seg) > 1:
        raise DicomError(f"study {study}: {len(on_seg)} SEG files under --seg reference its PET or CT series ("
                         f"{', '.join(sorted(ref.path.name for ref, _ in on_seg))}); exactly one is needed")
    if on_rt:
        return _rtstruct_label(*on_rt[0], pet_img, roi, study)
    if on_seg:
        return _seg_label(*on_seg[0], pet_img, roi, study)
    if foreign:
        ref = foreign[0]
        raise DicomError(f"study {study}: SEG {ref.path.name} references series "
                         f"{', '.join(sorted(ref.series)) or '(none)'}, which is not its PET series {pet.uid} or CT "
                         f"series {ct.uid} under --in")
    raise DicomError(f"study {study}: no RTSTRUCT drawn on its PET series {pet.uid} and no SEG of its PET or CT "
                     "series under --seg; exactly one is needed")


def _case_id(ds: Any, id_from: str, study: str) -> str:
    value = str(getattr(ds, id_from, "") or "").strip()
    if not value:
        raise DicomError(f"study {study}: {id_from} is empty; choose another --id-from")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "case"


def convert(src: Path, out: Path, *, id_from: str = "PatientID", overwrite: bool = False,
            progress: Callable[[str], None] | None = None, seg: Path | None = None,
            roi: str = DEFAULT_ROI) -> dict[str, Any]:
    """Convert every PET/CT study under ``src`` (and its RTSTRUCT or SEG label under ``seg``: the ROIs or
    segments whose name contains ``roi``); returns the manifest (also ``out/manifest.json``)."""
    import numpy as np
    import SimpleITK as sitk

    from lossbench.fsio import atomic_folder

    if id_from not in ("PatientID", "StudyInstanceUID"):
        raise LossbenchError(f"--id-from must be PatientID or StudyInstanceUID, got {id_from!r}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LossbenchError(f"--in {src} is not a folder")

    def check(folder: Path) -> None:
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise LossbenchError(f"--out {folder} is not empty; choose another folder or pass --overwrite")

    if seg is not None and not Path(seg).is_dir():
        raise LossbenchError(f"--seg {seg} is not a folder")
    if seg is not None and not roi.strip():
        raise LossbenchError("--roi is empty; give part of the ROI or segment names to include, e.g. lesion")
    check(out)
    studies = _scan(src)
    if not studies:
        raise LossbenchError(f"no DICOM files under {src}")
    label_series = ([s for series in (_scan(Path(seg)) if Path(seg) != src else studies).values()
                     for s in series.values()] if seg is not None else [])
    rtstructs = [f for s in label_series if s.modality == "RTSTRUCT" for f in s.files]
    segs = _seg_refs([f for s in label_series if s.modality == "SEG" for f in s.files])
    manifest: dict[str, Any] = {"source": str(src.resolve()), "id_from": id_from, "studies": []}
    if seg is not None:
        manifest["labels"] = {"from": "RTSTRUCT or SEG", "seg": str(Path(seg).resolve()), "roi_contains": roi,
                              "seg_fraction_included": FRACTION_INCLUDED}
    with atomic_folder(out, check=check) as tmp:
        (tmp / "imagesTr").mkdir()
        seen: dict[str, str] = {}
        for study_uid, series in sorted(studies.items()):
            if all(s.modality in ("RTSTRUCT", "SEG") for s in series.values()):
                continue  # structure sets only (their images are elsewhere)
            images = [s for s in series.values() if s.modality in ("CT", "PT")]
            pets = [s for s in images if s.modality == "PT"]
            cts = [s for s in images if s.modality == "CT"]
            if len(pets) != 1 or len(cts) != 1:
                raise DicomError(f"study {study_uid}: {len(cts)} CT and {len(pets)} PET series "
                                 "(SeriesInstanceUID); exactly one of each is needed")
            pet_img, pet_ds = _volume(pets[0])
            case = _case_id(pet_ds, id_from, study_uid)
            if case in seen:
                raise DicomError(f"studies {seen[case]} and {study_uid} both give the id {case!r}; use "
                                 "--id-from StudyInstanceUID")
            seen[case] = study_uid
            if progress is not None:
                progress(case)
            factor, facts = suv_factor(pets[0].first, study_uid)
            suv = sitk.Cast(pet_img * factor, sitk.sitkFloat32)
            ct_img, _ = _volume(cts[0])
            ct_on_pet = sitk.Resample(ct_img, suv, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
            sitk.WriteImage(ct_on_pet, str(tmp / "imagesTr" / f"{case}_0000.nii.gz"))
            sitk.WriteImage(suv, str(tmp / "imagesTr" / f"{case}_0001.nii.gz"))
            label_facts: dict[str, Any] = {}
            if seg is not None:
                label, label_facts = _label(rtstructs, segs, pets[0], cts[0], suv, roi, study_uid)
                (tmp / "labelsTr").mkdir(exist_ok=True)
                sitk.WriteImage(label, str(tmp / "labelsTr" / f"{case}.nii.gz"))
            manifest["studies"].append({
                "id": case, "study": study_uid, "pet_series": pets[0].uid, "ct_series": cts[0].uid,
                "pet_slices": len(pets[0].files), "ct_slices": len(cts[0].files),
                "pet_shape": list(suv.GetSize()), "pet_spacing_mm": list(suv.GetSpacing()),
                "suv_max": float(np.max(sitk.GetArrayViewFromImage(suv))), **facts, **label_facts,
            })
        if seg is not None and manifest["studies"]:  # what the labels came from: RTSTRUCT, SEG or RTSTRUCT+SEG
            manifest["labels"]["from"] = "+".join(sorted({s["label_from"] for s in manifest["studies"]}))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest

"""``lossbench data dicom --seg``: labels from a DICOM SEG (written and read with highdicom).

Small synthetic PET/CT studies (tests/dicom_writers.py) get a real ``highdicom.seg.Segmentation``
made from a planted mask: a "Lesion 1" segment (on some slices only, one voxel at fraction exactly
0.5 and one at 0.25 in the FRACTIONAL case) and a "Bladder" segment that the default ``--roi lesion``
must leave out. The SEG's frames are then put in a shuffled order (highdicom writes them sorted). The label NIfTI must equal the
planted lesion voxel for voxel on the PET grid, whichever study each SEG file belongs to (matched by
UIDs); a SEG on a finer CT grid must come back nearest-neighbour on the PET grid; and a SEG that does
not fit (no segment matches, another series referenced, an RTSTRUCT as well) is one line and no
output folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")
hd = pytest.importorskip("highdicom")

from pydicom.sr.codedict import codes  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.dicom_writers import ORIGIN, SHAPE, SPACING, write_rtstruct, write_study  # noqa: E402

LESION_CODES = (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion)
BLADDER_CODES = (codes.SCT.Organ, codes.SCT.Bladder)


def _series(folder, modality: str) -> list:
    """Headers of the series' files (any order)."""
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob(f"{modality}-*.dcm"))]


def _slice(ds) -> int:
    """The slice index k of a file written by write_series (position = ORIGIN + normal · gap · k)."""
    orient = np.array(ds.ImageOrientationPatient, float)
    normal = np.cross(orient[:3], orient[3:])
    return round(float(np.dot(normal, np.array(ds.ImagePositionPatient, float) - np.array(ORIGIN))) / SPACING[2])


def _monotonic(values: list[float]) -> bool:
    return values == sorted(values) or values == sorted(values, reverse=True)


def _shuffle_frames(path) -> None:
    """Put the SEG's frames in a shuffled order (pixel data and per-frame groups together), across and
    within segments. highdicom writes them sorted by position, but DICOM leaves the order free (other
    tools write them as they come), so the converter must place each frame by its own plane position."""
    from pydicom.pixels import pack_bits

    ds = pydicom.dcmread(path)
    frames, groups = ds.pixel_array, list(ds.PerFrameFunctionalGroupsSequence)
    shared = ds.SharedFunctionalGroupsSequence[0]

    def segment_of(group) -> int:  # one segment only: identified once in the shared groups
        return int((group if "SegmentIdentificationSequence" in group else shared)
                   .SegmentIdentificationSequence[0].ReferencedSegmentNumber)

    def z(order, segment=None):
        return [float(groups[i].PlanePositionSequence[0].ImagePositionPatient[2]) for i in order
                if segment is None or segment_of(groups[i]) == segment]

    segments = {segment_of(g) for g in groups}
    for seed in range(100):  # the first deterministic shuffle that is out of order overall and in each segment
        order = [int(i) for i in np.random.default_rng(seed).permutation(len(groups))]
        if not _monotonic(z(order)) and not any(len(z(order, n)) > 2 and _monotonic(z(order, n)) for n in segments):
            break
    else:
        raise AssertionError("no shuffled frame order found")
    frames = frames[order]
    ds.PixelData = pack_bits(frames) if ds.SegmentationType == "BINARY" else frames.astype(np.uint8).tobytes()
    ds.PerFrameFunctionalGroupsSequence = [groups[i] for i in order]
    ds.save_as(path)


def write_seg(path, sources: list, segments: dict[str, np.ndarray], kind: str = "BINARY") -> None:
    """A highdicom SEG of ``sources`` (one series' headers) with one segment per name, each planted as an
    array on that series' grid (slice k, row, column; values 0..1); its frames then shuffled."""
    assert {_slice(ds) for ds in sources} == set(range(len(sources)))
    pixels = np.stack([np.stack([mask[_slice(ds)] for ds in sources]) for mask in segments.values()], axis=-1)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=(BLADDER_CODES if "bladder" in label.lower() else LESION_CODES)[0],
            segmented_property_type=(BLADDER_CODES if "bladder" in label.lower() else LESION_CODES)[1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label in enumerate(segments, start=1)]
    extra = {"max_fractional_value": 4} if kind == "FRACTIONAL" else {}  # 0.25 steps: 0.5 is exact
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels if kind == "FRACTIONAL" else pixels >= 0.5,
        segmentation_type=kind, segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=100, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lossbench tests",
        manufacturer_model_name="write_seg", software_versions="1", device_serial_number="1", **extra)
    seg.save_as(path)
    _shuffle_frames(path)
    # still a SEG that highdicom reads, with every planted frame (empty slices have none)
    back = hd.seg.segread(path)
    assert back.segmentation_type.value == kind
    assert back.NumberOfFrames == sum(int(mask[k].any()) for mask in segments.values() for k in range(len(sources)))


def _planted(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """(lesion, bladder) on the PET grid; the lesion has fractions 1, 0.75, 0.5 (in) and 0.25 (out)."""
    lesion, bladder = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    if variant == 0:
        lesion[1:3, 1:3, 1:3] = 1.0
        lesion[3, 4, 6] = 1.0
        lesion[1, 1, 1], lesion[2, 2, 2], lesion[1, 3, 1] = 0.5, 0.75, 0.25
        bladder[4, 2:4, 4:7] = 1.0
    else:
        lesion[3, 4, 5:7] = 1.0
        lesion[2, 0, 7], lesion[3, 4, 4] = 0.5, 0.25
        bladder[0, 0:2, 0:3] = 1.0
    return lesion, bladder


def _label(out, case: str) -> tuple[np.ndarray, object, object]:
    label = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
    pet = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0001.nii.gz"))
    return sitk.GetArrayFromImage(label), label, pet


def _one_line_error(done, out) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()  # nothing half-written
    return done.stderr


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL"])
def test_seg_lesion_segments_become_the_label_on_the_pet_grid(run_cli, tmp_path, kind):
    src, segs, out = tmp_path / "dicom", tmp_path / "segs", tmp_path / "out"
    src.mkdir()
    segs.mkdir()
    planted = {}
    # two studies, the second feet-first in x; their SEG files in the reverse of the studies' file order
    for variant, (patient, orientation, name) in enumerate([("P1", (1, 0, 0, 0, 1, 0), "b.dcm"),
                                                            ("P2", (-1, 0, 0, 0, 1, 0), "a.dcm")]):
        folder = src / patient
        folder.mkdir()
        write_study(folder, patient=patient, orientation=orientation)
        pet = _series(folder, "PT")
        lesion, bladder = _planted(variant)
        write_seg(segs / name, pet, {"Lesion 1": lesion, "Bladder": bladder}, kind)
        planted[patient] = (lesion, bladder, str(pet[0].SeriesInstanceUID), name)

    done = run_cli("data", "dicom", "--in", str(src), "--out", str(out), "--seg", str(segs), "--json")
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["labels"]["from"] == "SEG" and manifest["labels"]["roi_contains"] == "lesion"
    assert manifest["labels"]["seg_fraction_included"] == 0.5
    assert sorted(s["id"] for s in manifest["studies"]) == ["P1", "P2"]
    for study in manifest["studies"]:
        lesion, bladder, pet_series, name = planted[study["id"]]
        expected = (lesion >= 0.5).astype(np.uint8)  # FRACTIONAL: 0.5 is in, 0.25 is out
        got, label, pet = _label(out, study["id"])
        assert label.GetSize() == pet.GetSize() and label.GetOrigin() == pet.GetOrigin()
        assert label.GetDirection() == pet.GetDirection() and label.GetSpacing() == pet.GetSpacing()
        assert got.dtype == np.uint8 and np.array_equal(got, expected), study["id"]
        assert not got[bladder > 0].any()  # the Bladder segment is not in the label
        voxels = int(expected.sum())
        assert study["label_from"] == "SEG" and study["label_file"] == name and study["label_seg_type"] == kind
        assert study["label_series"] == pet_series == study["pet_series"]
        assert study["label_series_modality"] == "PT"
        assert study["label_segments"] == [{"number": 1, "label": "Lesion 1", "voxels": voxels}]
        assert study["label_voxels"] == voxels
        assert "label_rois" not in study


def test_a_seg_on_the_finer_ct_grid_is_resampled_nearest_neighbour_to_the_pet_grid(run_cli, tmp_path):
    src, out = tmp_path / "dicom", tmp_path / "out"
    src.mkdir()
    write_study(src, ct_zoom=2)  # CT voxel (2j, 2i) is the nearest to PET voxel (j, i), a quarter voxel off
    ct = _series(src, "CT")
    lesion = np.zeros((SHAPE[0], SHAPE[1] * 2, SHAPE[2] * 2), np.float32)
    lesion[1:3, 2:7, 3:8] = 1.0  # odd and even CT rows / columns
    lesion[3, 5, 9] = 1.0  # a voxel between PET centres: no PET voxel is nearest to it
    write_seg(src / "seg.dcm", ct, {"Lesion 1": lesion})

    done = run_cli("data", "dicom", "--in", str(src), "--out", str(out), "--seg", str(src), "--json")
    assert done.returncode == 0, done.stderr
    (study,) = json.loads(done.stdout)["studies"]
    got, label, pet = _label(out, "P1")
    expected = lesion[:, ::2, ::2].astype(np.uint8)  # nearest neighbour of each PET voxel centre (not linear)
    assert label.GetSize() == pet.GetSize() and label.GetOrigin() == pet.GetOrigin()  # the PET's grid, not the CT's
    assert got.shape == SHAPE and np.array_equal(got, expected)
    assert expected.sum() == 2 * 3 * 2
    assert study["label_series"] == study["ct_series"] and study["label_series_modality"] == "CT"
    assert study["label_segments"] == [{"number": 1, "label": "Lesion 1", "voxels": 12}]


def _foreign_series(sources: list) -> list:
    """The same slices as if they were another series (not under --in): new series and instance UIDs."""
    series = generate_uid()
    for ds in sources:
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
    return sources


@pytest.mark.parametrize("case", ["no segment matches --roi", "SEG of another series", "RTSTRUCT and SEG"])
def test_a_seg_that_does_not_fit_is_one_line_and_no_output(run_cli, tmp_path, case):
    src, out = tmp_path / "dicom", tmp_path / "out"
    src.mkdir()
    study = write_study(src)
    pet = _series(src, "PT")
    pet_series = str(pet[0].SeriesInstanceUID)
    lesion, bladder = _planted(0)
    args = []
    if case == "no segment matches --roi":
        write_seg(src / "seg.dcm", pet, {"Lesion 1": lesion, "Bladder": bladder})
        args = ["--roi", "tumour"]
    elif case == "SEG of another series":
        foreign = _foreign_series(pet)
        write_seg(src / "seg.dcm", foreign, {"Lesion 1": lesion})
    else:
        write_seg(src / "seg.dcm", pet, {"Lesion 1": lesion})
        write_rtstruct(src, (1, 0, 0, 0, 1, 0), study=study, pet_series=pet_series)

    done = run_cli("data", "dicom", "--in", str(src), "--out", str(out), "--seg", str(src), *args)
    message = _one_line_error(done, out)
    assert f"study {study}" in message
    if case == "no segment matches --roi":
        assert "contains 'tumour'" in message and "Bladder, Lesion 1" in message and "seg.dcm" in message
    elif case == "SEG of another series":
        assert str(foreign[0].SeriesInstanceUID) in message and pet_series in message
        assert "references series" in message and "not its PET series" in message
    else:
        assert "RTSTRUCT rtstruct.dcm" in message and "SEG seg.dcm" in message and "keep one" in message

"""The dataset contract (lossbench.datasets) and the ``psma`` plugin on tiny NIfTI cohorts."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from lossbench_psma.dataset import PsmaDataset, holdout_patients

from lossbench.datasets import Case, DatasetError, DatasetWarning, PetCtDataset, SplitPlan, make_split_plan
from lossbench.errors import LossbenchError
from lossbench.registry import load_registry

PATCH = 16


def psma(root: Path, **params) -> PsmaDataset:
    return PsmaDataset(data=str(root), **params)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# -- layouts ----------------------------------------------------------------------------------
def test_registered_component_builds_a_dataset(nnunet_root):
    component = load_registry().get("dataset", "psma")
    assert component.plugin == "psma"
    assert {"data", "layout", "n_folds", "split_scheme", "split_seed", "test_fraction"} <= set(component.defaults())
    ds = component.build({"data": str(nnunet_root), "n_folds": "3"})
    assert isinstance(ds, PetCtDataset)
    assert ds.split_plan().n_folds == 3
    with pytest.raises(LossbenchError, match="does not exist"):
        component.check({"data": str(nnunet_root / "nowhere")})


def test_nnunet_layout(nnunet_root):
    ds = psma(nnunet_root)
    assert ds.resolved_layout == "nnunet"
    train, test = ds.cases("train"), ds.cases("test")
    assert [c.id for c in train] == [f"PSMA-{i:03d}" for i in range(7)]
    assert [c.id for c in test] == ["PSMA-007", "PSMA-008"]
    case = train[0]
    assert case.ct == nnunet_root / "imagesTr" / "PSMA-000_0000.nii.gz"
    assert case.pet == nnunet_root / "imagesTr" / "PSMA-000_0001.nii.gz"
    assert case.label == nnunet_root / "labelsTr" / "PSMA-000.nii.gz"
    assert case.patient == "PSMA-000"
    assert test[0].label == nnunet_root / "labelsTs" / "PSMA-007.nii.gz"
    ds.validate()
    assert ds.info()["n_train"] == 7 and ds.info()["n_test"] == 2
    items = ds.data_dicts(test)
    assert items[0] == {"CT": str(test[0].ct), "PT": str(test[0].pet), "label": str(test[0].label),
                        "id": "PSMA-007", "patient": "PSMA-007"}


def test_nnunet_test_images_without_labels_are_inference_only(cohorts):
    root = cohorts.nnunet(n_train=5, n_test=1)
    for path in (root / "labelsTs").iterdir():
        path.unlink()
    (root / "labelsTs").rmdir()
    ds = psma(root)
    (test,) = ds.cases("test")
    assert test.label is None
    assert "label" not in ds.data_dicts([test])[0]
    ds.validate()


def test_nnunet_without_test_folder_holds_out_a_fraction(cohorts):
    root = cohorts.nnunet(n_train=10, n_test=0)
    ds = psma(root, test_fraction=0.2)
    test = {c.id for c in ds.cases("test")}
    assert len(test) == 2
    assert test == {c.id for c in psma(root, test_fraction=0.2).cases("test")}  # deterministic
    assert len(psma(root, test_fraction=0.0).cases("test")) == 0


def test_autopet_two_levels_groups_studies_by_patient(cohorts):
    root = cohorts.autopet({"PETCT_a": 2, "PETCT_b": 1, "PETCT_c": 3, "PETCT_d": 1, "PETCT_e": 2, "PETCT_f": 1},
                           shape=(24, 24, 24))
    ds = psma(root, test_fraction=0.2, n_folds=4)
    assert ds.resolved_layout == "autopet"
    cases = ds.cases()
    assert len(cases) == 10
    by_patient: dict[str, set[str]] = {}
    for c in cases:
        assert c.ct.name == "CTres.nii.gz" and c.pet.name == "SUV.nii.gz" and c.label.name == "SEG.nii.gz"
        assert c.id.startswith(c.patient + "_") and " " not in c.id
        by_patient.setdefault(c.patient, set()).add(c.split)
    assert all(len(splits) == 1 for splits in by_patient.values()), by_patient  # a patient is never split
    assert sum(splits == {"test"} for splits in by_patient.values()) == 1  # round(0.2 * 6) patients
    plan = ds.split_plan()
    for k in range(plan.n_folds):
        train, val = plan.fold(k)
        assert not {plan.patients[i] for i in train} & {plan.patients[i] for i in val}
    ds.validate()


def test_autopet_one_level(cohorts):
    root = cohorts.autopet({f"study{i}": 1 for i in range(5)}, nested=False, shape=(24, 24, 24))
    ds = psma(root, test_fraction=0.2)
    assert ds.resolved_layout == "autopet"
    assert sorted(c.id for c in ds.cases()) == [f"study{i}" for i in range(5)]
    assert all(c.patient == c.id for c in ds.cases())
    assert len(ds.cases("test")) == 1


def test_unknown_folder_says_what_layouts_it_expects(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="imagesTr/ID_0000.nii.gz.*CTres.nii.gz"):
        psma(tmp_path).cases()


def test_swapped_channels_in_dataset_json_are_refused(nnunet_root):
    (nnunet_root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "PET", "1": "CT"}}))
    with pytest.raises(DatasetError, match="expects CT as _0000"):
        psma(nnunet_root).cases()


# -- validation: one broken file each; the message names the case and the file ---------------
def _validate_error(root: Path, **params) -> str:
    before = tree(root)
    with pytest.raises(DatasetError) as info:
        psma(root, **params).validate()
    assert tree(root) == before, "validate() must not write into the data folder"
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("suffix", "role"), [("_0000", "CT"), ("_0001", "PET")])
def test_missing_modality(nnunet_root, suffix, role):
    path = nnunet_root / "imagesTr" / f"PSMA-003{suffix}.nii.gz"
    path.unlink()
    message = _validate_error(nnunet_root)
    assert f"case PSMA-003: missing {role} file {path}" in message


def test_missing_label(nnunet_root):
    path = nnunet_root / "labelsTr" / "PSMA-002.nii.gz"
    path.unlink()
    assert f"case PSMA-002: missing label file {path}" in _validate_error(nnunet_root)


def test_label_not_binary(nnunet_root, phantoms):
    path = nnunet_root / "labelsTr" / "PSMA-001.nii.gz"
    study = phantoms.make_study(seed=1)
    phantoms.save((study.label * 2).astype(np.uint8), study.affine, path)
    message = _validate_error(nnunet_root)
    assert f"case PSMA-001: label file {path} is not binary (values 0, 2)" in message


@pytest.mark.parametrize("what", ["shape", "affine"])
def test_label_off_the_pet_grid(nnunet_root, what, phantoms):
    path = nnunet_root / "labelsTr" / "PSMA-004.nii.gz"
    study = phantoms.make_study(seed=4)
    if what == "shape":
        phantoms.save(study.label[:-2], study.affine, path)
    else:
        phantoms.save(study.label, phantoms.make_affine(origin=(-38.0, -40.0, -40.0)), path)
    message = _validate_error(nnunet_root)
    assert f"case PSMA-004: label file {path} is not on the PET grid" in message
    assert "label_geometry=resample" in message


def test_label_off_the_pet_grid_can_be_resampled_with_a_note(nnunet_root, one_torch_thread, phantoms):
    path = nnunet_root / "labelsTr" / "PSMA-004.nii.gz"
    study = phantoms.make_study(seed=4)
    # the same lesions written at 4 mm: shape 24^3, same field of view
    coarse = study.label[::2, ::2, ::2]
    phantoms.save(coarse, phantoms.make_affine(spacing=(4.0, 4.0, 4.0), origin=(-39.0, -39.0, -39.0)), path)
    ds = psma(nnunet_root, label_geometry="resample")
    with pytest.warns(DatasetWarning, match="PSMA-004.*resampled nearest-neighbour"):
        ds.validate()
    assert any("PSMA-004" in note for note in ds.notes)
    tf = ds.transforms("val", patch=PATCH)
    item = tf(ds.data_dicts(ds.cases_by_id(["PSMA-004"]))[0])
    assert item["label"].shape[1:] == item["image"].shape[1:]
    assert item["label"].sum() > 0


def test_nan_suv(nnunet_root, phantoms):
    path = nnunet_root / "imagesTr" / "PSMA-005_0001.nii.gz"
    study = phantoms.make_study(seed=5)
    study.pet[10, 10, 10] = np.nan
    phantoms.save(study.pet, study.affine, path)
    assert f"case PSMA-005: PET file {path} contains 1 NaN voxels" in _validate_error(nnunet_root)


def test_negative_suv(nnunet_root, phantoms):
    path = nnunet_root / "imagesTr" / "PSMA-005_0001.nii.gz"
    study = phantoms.make_study(seed=5)
    study.pet[20, 20, 20] = -0.5
    phantoms.save(study.pet, study.affine, path)
    assert f"case PSMA-005: PET file {path} has negative SUV (minimum -0.5" in _validate_error(nnunet_root)


def test_small_negative_suv_is_accepted_only_within_the_tolerance_and_reported(nnunet_root, phantoms):
    for case in (2, 5):  # one voxel of -0.003, as a reconstruction gives
        path = nnunet_root / "imagesTr" / f"PSMA-00{case}_0001.nii.gz"
        study = phantoms.make_study(seed=case)
        study.pet[20, 20, 20] = -0.003
        phantoms.save(study.pet, study.affine, path)
    message = _validate_error(nnunet_root)  # default: no tolerance, refused with the way out named
    assert "negative SUV (minimum -0.003" in message and "negative_suv_tolerance" in message
    ds = psma(nnunet_root, negative_suv_tolerance=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.validate()
    lines = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert lines == ["dataset psma: in 2 of 9 cases (PSMA-002, PSMA-005): PET has negative SUV within "
                     "negative_suv_tolerance; the values are used as they are"]
    assert ds.info()["negative_suv_tolerance"] == 0.01 and ds.info()["notes"] == lines  # logged with the run
    assert "minimum -0.003" in " ".join(ds.notes)
    with pytest.raises(LossbenchError, match="negative_suv_tolerance=0.001"):  # beyond it: still refused
        psma(nnunet_root, negative_suv_tolerance=0.001).validate()
    with pytest.raises(LossbenchError, match="negative_suv_tolerance=-1 must be"):
        psma(nnunet_root, negative_suv_tolerance=-1)


def test_a_trailing_singleton_fourth_axis_is_accepted_as_evaluate_does(nnunet_root, phantoms, one_torch_thread):
    from lossbench.evaluation.io import read_image

    study = phantoms.make_study(seed=3)
    pet_path = nnunet_root / "imagesTr" / "PSMA-003_0001.nii.gz"
    phantoms.save(study.pet[..., None], study.affine, pet_path)  # (x, y, z, 1), as some scanners write
    phantoms.save(study.label[..., None], study.affine, nnunet_root / "labelsTr" / "PSMA-003.nii.gz")
    assert read_image(pet_path, kind="pet").array.shape == study.pet.shape  # what evaluate accepts
    ds = psma(nnunet_root)
    ds.validate()  # run accepts it too
    item = ds.transforms("val", patch=PATCH)(ds.data_dicts(ds.cases_by_id(["PSMA-003"]))[0])
    assert item["image"].shape[0] == 2 and item["image"].shape[1:] == item["label"].shape[1:]
    phantoms.save(np.stack([study.pet, study.pet], -1), study.affine, pet_path)
    assert "must be a 3-D image (or x, y, z, 1), got shape" in _validate_error(nnunet_root)


def test_empty_file(nnunet_root):
    path = nnunet_root / "imagesTr" / "PSMA-006_0000.nii.gz"
    path.write_bytes(b"")
    assert f"case PSMA-006: CT file {path} is empty (0 bytes)" in _validate_error(nnunet_root)


def test_empty_image(nnunet_root, phantoms):
    path = nnunet_root / "imagesTr" / "PSMA-006_0001.nii.gz"
    phantoms.save(np.zeros((0, 48, 48), np.float32), phantoms.make_affine(), path)
    assert f"case PSMA-006: PET file {path} is empty (shape (0, 48, 48))" in _validate_error(nnunet_root)


def test_corrupt_file(nnunet_root):
    path = nnunet_root / "imagesTr" / "PSMA-000_0001.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])  # truncated download
    message = _validate_error(nnunet_root)
    assert f"case PSMA-000: PET file {path}" in message and ("corrupt" in message or "cannot be read" in message)


def test_unreadable_header(nnunet_root):
    path = nnunet_root / "labelsTs" / "PSMA-008.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    assert f"case PSMA-008: label file {path} cannot be read" in _validate_error(nnunet_root)


def test_all_problems_are_kept_and_counted(nnunet_root):
    (nnunet_root / "labelsTr" / "PSMA-002.nii.gz").unlink()
    (nnunet_root / "imagesTr" / "PSMA-003_0000.nii.gz").unlink()
    with pytest.raises(DatasetError) as info:
        psma(nnunet_root).validate()
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("case PSMA-002: missing label file")
    assert "and 1 more problem: case PSMA-003: missing CT file" in str(info.value)


# -- splits -----------------------------------------------------------------------------------
def _cases(n: int, per_patient: int = 1, n_test: int = 0) -> list[Case]:
    out = []
    for i in range(n):
        p = f"P{i // per_patient:03d}"
        out.append(Case(id=f"C{i:03d}", ct=Path("ct"), pet=Path("pet"), label=Path("l"),
                        split="test" if i >= n - n_test else "train", patient=p))
    return out


def test_contiguous_is_the_reference_rule():
    cases = _cases(13)[::-1]  # order of discovery must not matter
    plan = make_split_plan(cases, n_folds=5)
    ids = sorted(c.id for c in cases)
    assert [len(f) for f in plan.folds] == [3, 3, 3, 2, 2]
    assert [i for fold in plan.folds for i in fold] == ids  # sorted ids cut into contiguous blocks
    train, val = plan.fold(1)
    assert val == tuple(ids[3:6]) and train == tuple(ids[:3] + ids[6:])
    with pytest.raises(LossbenchError, match="folds 0-4"):
        plan.fold(5)


def test_splits_are_deterministic_and_seeded():
    cases = _cases(20, n_test=4)
    a, b = make_split_plan(cases), make_split_plan(list(reversed(cases)))
    assert a == b and a.to_json() == b.to_json() and a.sha256 == b.sha256
    assert a.test == tuple(f"C{i:03d}" for i in range(16, 20))
    s1, s2 = make_split_plan(cases, scheme="shuffled", seed=1), make_split_plan(cases, scheme="shuffled", seed=1)
    assert s1 == s2 and s1.sha256 == s2.sha256
    s3 = make_split_plan(cases, scheme="shuffled", seed=2)
    assert s3.folds != s1.folds and s1.folds != a.folds
    assert s1.test == a.test  # the held-out test set does not depend on the fold scheme
    assert sorted(c for fold in s1.folds for c in fold) == sorted(c for fold in a.folds for c in fold)  # same pool
    # the seed plays no part in contiguous splits, so it does not change the hash
    assert make_split_plan(cases, seed=7).sha256 == a.sha256


def test_splits_keep_a_patients_cases_together():
    cases = _cases(18, per_patient=3)
    for scheme in ("contiguous", "shuffled"):
        plan = make_split_plan(cases, n_folds=5, scheme=scheme, seed=3)
        for k in range(5):
            train, val = plan.fold(k)
            assert set(train).isdisjoint(val) and set(train) | set(val) == {c.id for c in cases}
            assert {plan.patients[i] for i in train}.isdisjoint({plan.patients[i] for i in val})
    # a patient with a case in the training pool and one in the test set is refused
    bad = _cases(6, per_patient=2, n_test=1)
    with pytest.raises(DatasetError, match="patient 'P002'.*stay together"):
        make_split_plan(bad, n_folds=2)
    with pytest.raises(DatasetError, match="3 training patients cannot make 5 folds"):
        make_split_plan(_cases(6, per_patient=2), n_folds=5)


def test_split_hash_is_stable():
    """The JSON format and its hash are part of the contract: runs record it. Change both knowingly."""
    plan = make_split_plan(_cases(7, n_test=2), n_folds=2, dataset="psma")
    assert plan.to_json() == (
        '{"dataset":"psma","folds":[["C000","C001","C002"],["C003","C004"]],"format":"lossbench-splits/1",'
        '"n_folds":2,"patients":{"C000":"P000","C001":"P001","C002":"P002","C003":"P003","C004":"P004",'
        '"C005":"P005","C006":"P006"},"scheme":"contiguous","seed":null,"test":["C005","C006"]}'
    )
    assert plan.sha256 == "689b03705688ad88cd8c6294409554c2d740023508932afa0f5b1d7bf359e757"


def test_split_write_is_atomic(tmp_path, monkeypatch):
    plan = make_split_plan(_cases(10), n_folds=5, dataset="psma")
    path = plan.write(tmp_path / "run" / "splits.json")
    assert SplitPlan.read(path) == plan and SplitPlan.read(path).sha256 == plan.sha256
    assert os.listdir(path.parent) == ["splits.json"]
    other = make_split_plan(_cases(12), n_folds=3)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        other.write(path)
    assert SplitPlan.read(path) == plan  # the old file is intact
    assert os.listdir(path.parent) == ["splits.json"]  # and no temporary file is left behind


def test_split_plan_refuses_inconsistent_content():
    patients = {"A": "P1", "B": "P1", "C": "P2"}
    with pytest.raises(LossbenchError, match="'A' is in fold 0 and in fold 1"):
        SplitPlan(folds=(("A",), ("A", "C")), test=(), patients=patients)
    with pytest.raises(LossbenchError, match="patient 'P1' has cases in fold 0 and in fold 1"):
        SplitPlan(folds=(("A",), ("B", "C")), test=(), patients=patients)
    with pytest.raises(LossbenchError, match="'D' .* has no patient"):
        SplitPlan(folds=(("A", "B"), ("C",)), test=("D",), patients=patients)
    with pytest.raises(LossbenchError, match="not a lossbench split plan"):
        SplitPlan.from_json('{"format": "something else"}')
    assert Case(id="X", ct="a", pet="b", label=None).patient == "X"


def test_holdout_is_by_patient_and_deterministic():
    patients = [f"P{i}" for i in range(10)]
    held = holdout_patients(patients, 0.3, seed=0)
    assert len(held) == 3 and held == holdout_patients(list(reversed(patients)), 0.3, seed=0)
    assert held != holdout_patients(patients, 0.3, seed=1)
    assert holdout_patients(["only"], 0.5) == set()


# -- MONAI transforms -------------------------------------------------------------------------
def _is_random(t) -> bool:
    from monai.transforms import Randomizable

    return isinstance(t, Randomizable)


def test_deterministic_prefix_is_cacheable(nnunet_root, one_torch_thread):
    ds = psma(nnunet_root)
    det = ds.deterministic_transforms("train")
    rand = ds.random_transforms("train", patch=PATCH)
    assert not any(_is_random(t) for t in det) and _is_random(rand[0])
    composed = ds.transforms("train", patch=PATCH).transforms
    first_random = next(i for i, t in enumerate(composed) if _is_random(t))
    assert first_random == len(det) and len(composed) == len(det) + len(rand)
    for stage in ("val", "infer"):
        assert not any(_is_random(t) for t in ds.transforms(stage, patch=PATCH).transforms)
    # picklable, for DataLoader workers started with "spawn"
    restored = pickle.loads(pickle.dumps(ds.transforms("val", patch=PATCH)))
    item = restored(ds.data_dicts(ds.cases()[:1])[0])
    assert item["image"].shape[0] == 2
    with pytest.raises(LossbenchError, match="unknown transform stage"):
        ds.transforms("test", patch=PATCH)


def test_first_training_batch(nnunet_root, one_torch_thread):
    import torch
    from monai.data import CacheDataset, DataLoader

    ds = psma(nnunet_root)
    tf = ds.transforms("train", patch=(PATCH, PATCH, PATCH))
    cached = CacheDataset(ds.data_dicts(ds.cases("train")[:3]), tf, cache_rate=1.0, num_workers=0, progress=False)
    batch = next(iter(DataLoader(cached, batch_size=2, shuffle=False, num_workers=0)))
    image, label = batch["image"], batch["label"]
    assert image.shape == (2, 2, PATCH, PATCH, PATCH) and image.dtype == torch.float32
    assert label.shape == (2, 1, PATCH, PATCH, PATCH) and label.dtype == torch.int64
    ct, pet = image[:, 0], image[:, 1]
    assert ct.min() >= 0.0 and ct.max() <= 1.0
    assert pet.min() >= 0.0 and pet.max() > 1.0  # raw SUV, not normalised
    assert set(label.unique().tolist()) <= {0, 1}
    assert "CT" not in batch and "PT" not in batch
    assert list(batch["id"]) == ["PSMA-000", "PSMA-001"]


@pytest.mark.parametrize(("pos_neg", "expected"), [((4, 1), 0.8), ((1, 1), 0.5)])
def test_positive_crop_ratio(nnunet_root, pos_neg, expected, one_torch_thread):
    """Share of patches centred on a lesion voxel, over many draws (no affine so centres stay put)."""
    from monai.transforms import Compose

    ds = psma(nnunet_root)
    det = Compose(ds.deterministic_transforms("train"))(ds.data_dicts(ds.cases_by_id(["PSMA-000"]))[0])
    rand = Compose(ds.random_transforms("train", patch=PATCH, pos_neg=pos_neg, affine_prob=0.0))
    rand.set_random_state(seed=0)
    draws = 300
    centred = sum(int(rand(dict(det))[0]["label"][0, PATCH // 2, PATCH // 2, PATCH // 2]) for _ in range(draws))
    assert abs(centred / draws - expected) < 0.07


def test_validation_item_is_the_whole_volume_at_2mm_ras(nnunet_root, one_torch_thread):
    import torch

    ds = psma(nnunet_root)
    item = ds.transforms("val", patch=PATCH)(ds.data_dicts(ds.cases("train")[:1])[0])
    assert item["image"].shape[0] == 2 and item["label"].shape[0] == 1
    assert item["image"].shape[1:] == item["label"].shape[1:]
    assert item["label"].dtype == torch.uint8
    assert np.allclose(np.diag(np.asarray(item["image"].affine))[:3], 2.0)
    ct = item["image"][0]
    assert float(ct.min()) == 0.0 and float(ct.max()) == 1.0
    # the crop keeps the body's bounding box (CT > 0), with every lesion voxel
    original = np.asarray(nib.load(ds.cases("train")[0].label).dataobj)
    assert int(item["label"].sum()) == int(original.sum())


def test_ct_on_another_grid_is_resampled_to_pet(cohorts, one_torch_thread, phantoms):
    from monai.transforms import Compose

    root = cohorts.nnunet(n_train=5, n_test=0)
    study = phantoms.make_study(seed=0)
    # CT at 1 mm over a smaller field of view than the PET
    fine = np.kron(study.ct[8:40, 8:40, 8:40], np.ones((2, 2, 2), np.float32)).astype(np.int16)
    start = -40.0 + 8 * 2.0 - 0.5  # PET voxel 8, whose 2 mm extent the two 1 mm voxels split
    ct_affine = phantoms.make_affine(spacing=(1.0, 1.0, 1.0), origin=(start, start, start))
    phantoms.save(fine, ct_affine, root / "imagesTr" / "PSMA-000_0000.nii.gz")
    ds = psma(root, test_fraction=0.0)
    with pytest.warns(DatasetWarning, match=r"in 1 of 5 cases \(PSMA-000\): CT is not on the PET grid; it is resampled"):
        ds.validate()
    assert any("PSMA-000: CT file" in note for note in ds.notes)
    steps = ds.deterministic_transforms("val")
    upto = next(i for i, t in enumerate(steps) if type(t).__name__ == "AlignToPETd") + 1
    item = Compose(steps[:upto])(ds.data_dicts(ds.cases_by_id(["PSMA-000"]))[0])
    ct, pet = item["CT"], item["PT"]
    assert ct.shape == pet.shape
    assert np.allclose(np.asarray(ct.affine), np.asarray(pet.affine))
    assert float(ct[0, 0, 0, 0]) == -1024.0  # outside the CT's field of view: air
    inside = np.asarray(ct[0, 12:36, 12:36, 12:36])
    assert np.allclose(inside, study.ct[12:36, 12:36, 12:36], atol=1.0)
    full = ds.transforms("val", patch=PATCH)(ds.data_dicts(ds.cases_by_id(["PSMA-000"]))[0])
    assert full["image"].shape[1:] == full["label"].shape[1:]


@pytest.mark.parametrize(
    ("spacing", "flip", "min_dice"),
    [((2.0, 2.0, 2.0), (False, False, False), 1.0), ((1.5, 1.5, 2.5), (True, True, False), 0.9)],
    ids=["2mm-ras", "anisotropic-flipped"],
)
def test_prediction_inverts_to_the_original_grid(cohorts, spacing, flip, min_dice, one_torch_thread):
    import torch

    shape = tuple(int(round(96 / s)) for s in spacing)
    root = cohorts.nnunet(n_train=5, n_test=1, shape=shape, spacing=spacing, flip=flip, radius=7.0)
    ds = psma(root)
    (case,) = ds.cases("test")
    tf = ds.transforms("infer", patch=PATCH)
    item = tf(ds.data_dicts([case])[0])
    assert np.allclose(np.diag(np.asarray(item["image"].affine))[:3], 2.0)
    onehot = torch.nn.functional.one_hot(item["label"][0].long(), 2).permute(3, 0, 1, 2).float()
    mask = ds.prediction_to_original(item, onehot[None] * 5.0, tf)
    original = np.asarray(nib.load(case.label).dataobj)
    assert mask.dtype == np.uint8 and mask.shape == original.shape
    dice = 2 * np.logical_and(mask, original).sum() / (mask.sum() + original.sum())
    assert dice >= min_dice, dice
    with pytest.raises(LossbenchError, match="do not match"):
        ds.prediction_to_original(item, onehot[:, :-1], tf)


def test_inference_without_a_label_the_engine_way(cohorts, one_torch_thread):
    """CacheDataset -> DataLoader -> sliding window -> decollate -> original PET grid, no label needed."""
    import torch
    from monai.data import CacheDataset, DataLoader, decollate_batch
    from monai.inferers import sliding_window_inference

    root = cohorts.nnunet(n_train=5, n_test=2, shape=(64, 64, 38), spacing=(1.5, 1.5, 2.5),
                          flip=(True, True, False), radius=7.0)
    for path in (root / "labelsTs").iterdir():
        path.unlink()
    (root / "labelsTs").rmdir()
    ds = psma(root)
    cases = {c.id: c for c in ds.cases("test")}
    tf = ds.transforms("infer", patch=PATCH)
    loader = DataLoader(CacheDataset(ds.data_dicts(cases.values()), tf, progress=False), batch_size=2)

    def network(x):  # "lesion" where SUV > 4
        return torch.stack([4.0 - x[:, 1], x[:, 1] - 4.0], dim=1)

    seen = []
    for batch in loader:
        assert "label" not in batch
        logits = sliding_window_inference(batch["image"], (PATCH,) * 3, 4, network)
        for item, item_logits in zip(decollate_batch(batch), logits, strict=True):
            mask = ds.prediction_to_original(item, item_logits, tf)
            pet = np.asarray(nib.load(cases[item["id"]].pet).dataobj)
            assert mask.shape == pet.shape
            dice = 2 * np.logical_and(mask, pet > 4).sum() / (mask.sum() + (pet > 4).sum())
            assert dice > 0.9, (item["id"], dice)
            seen.append(item["id"])
    assert sorted(seen) == sorted(cases)


def test_lossbench_show_dataset_psma(run_cli):
    result = run_cli("show", "dataset", "psma")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for expected in ("imagesTr/<ID>_0000.nii.gz", "CTres.nii.gz", "test_fraction", "data=PATH",
                     "provided by plugin psma"):
        assert expected in text


def test_synthetic_phantom_cohort_validates(tmp_path, one_torch_thread):
    import torch

    synth = pytest.importorskip("lossbench_psma.synth", reason="the phantom generator is not installed")
    root = Path(synth.generate_cohort(tmp_path / "cohort", n_cases=5, seed=0))
    ds = psma(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # the phantoms are on one grid: no notes
        ds.validate()
    assert len(ds.cases()) == 5 and ds.cases("train")
    # the phantoms go through the inference pipeline and back onto their own grid
    (case, *_) = ds.cases()
    tf = ds.transforms("infer", patch=PATCH, spacing=4.0)
    item = tf(ds.data_dicts([case])[0])
    ct = item["image"][0]
    assert float(ct.min()) == 0.0 and float(ct.max()) == 1.0
    onehot = item["label"][0].long() == torch.arange(2).view(2, 1, 1, 1)
    mask = ds.prediction_to_original(item, onehot.float(), tf)
    assert np.array_equal(mask, np.asarray(nib.load(case.label).dataobj))


def test_a_successful_validation_is_remembered_until_a_file_changes(tmp_path, monkeypatch):
    """Real cohorts take minutes to read: unchanged files are not read again; a change is noticed."""
    import os

    import nibabel as nib
    import numpy as np

    from lossbench_psma import dataset as psma_dataset
    from lossbench_psma.synth import config_for, generate_cohort

    root = generate_cohort(tmp_path / "cohort", 4, seed=1, config=config_for(spacing=8.0), test_fraction=0.25)
    ds = psma_dataset.PsmaDataset(data=str(root))
    ds.validate()

    reads = []
    real_check = psma_dataset.check_case
    monkeypatch.setattr(psma_dataset, "check_case", lambda *a, **k: reads.append(a[0].id) or real_check(*a, **k))
    psma_dataset.PsmaDataset(data=str(root)).validate()
    assert reads == []  # remembered

    label = root / "labelsTr" / sorted(os.listdir(root / "labelsTr"))[0]
    img = nib.load(str(label))
    broken = np.asarray(img.dataobj).astype(np.uint8)
    broken.flat[0] = 2  # not binary any more
    nib.save(nib.Nifti1Image(broken, img.affine), str(label))
    with pytest.raises(LossbenchError, match="binary"):
        psma_dataset.PsmaDataset(data=str(root)).validate()
    assert reads  # read again

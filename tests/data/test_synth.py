"""The synthetic PSMA PET/CT phantom generator (lossbench_psma.synth) and ``lossbench data synth``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from lossbench.errors import LossbenchError, ParameterError
from lossbench_psma import synth

#: The default field of view at 8 mm: 56 x 40 x 112 voxels, fast enough for a 40-case cohort.
SMALL = synth.config_for(spacing=8.0)
N_COHORT = 40


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth.generate_cohort(tmp_path_factory.mktemp("synth") / "cohort", N_COHORT, 0, SMALL)


@pytest.fixture(scope="module")
def manifest(cohort) -> dict:
    return json.loads((cohort / "manifest.json").read_text())


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def dmax_mm_reference(mask: np.ndarray, spacing) -> float:
    """Dmax by brute force over the convex hull's vertices (all points when the set is flat)."""
    pts = np.argwhere(mask) * np.asarray(spacing, float)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except Exception:  # fewer than 4 points, or all in a plane
        pass
    return float(pdist(pts).max())


# -- determinism --------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays_and_lesions():
    a = synth.generate_case("A", 7, SMALL)
    b = synth.generate_case("B", np.random.SeedSequence(7), SMALL)
    for x, y in zip(a[:3], b[:3]):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a[3] == b[3]
    c = synth.generate_case("A", 8, SMALL)
    assert not np.array_equal(a[1], c[1])
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32 and a[2].dtype == np.uint8
    assert a[0].shape == a[1].shape == a[2].shape == SMALL.shape


def test_cohorts_are_byte_identical_and_prefix_stable(tmp_path, cohort, manifest):
    one = synth.generate_cohort(tmp_path / "one", 3, 0, SMALL)
    two = synth.generate_cohort(tmp_path / "two", 3, 0, SMALL)
    assert digest(one) == digest(two)  # images, labels, dataset.json and manifest.json
    small = json.loads((one / "manifest.json").read_text())
    for case in small["cases"]:
        big = manifest["cases"][case["index"]]
        assert (case["id"], case["lesions"], case["strata"]) == (big["id"], big["lesions"], big["strata"])
        for key in ("CT", "PET", "label"):  # the split may differ, the content does not
            assert hashlib.sha256((one / case["files"][key]).read_bytes()).digest() == \
                hashlib.sha256((cohort / big["files"][key]).read_bytes()).digest()


def test_threads_write_the_same_bytes_as_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_SYNTH_WORKERS", "1")
    assert synth.cohort.generation_workers(6) == 1
    one = synth.generate_cohort(tmp_path / "one", 6, 2, SMALL)
    monkeypatch.setenv("LOSSBENCH_SYNTH_WORKERS", "3")
    assert synth.cohort.generation_workers(6) == 3
    seen = []
    three = synth.generate_cohort(tmp_path / "three", 6, 2, SMALL, progress=lambda i, n, cid: seen.append((i, cid)))
    assert digest(one) == digest(three)
    assert seen == [(i + 1, f"PSMA-SYN-{i:03d}") for i in range(6)]  # in order, each case once
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("LOSSBENCH_SYNTH_WORKERS", bad)
        with pytest.raises(ParameterError, match="LOSSBENCH_SYNTH_WORKERS"):
            synth.generate_cohort(tmp_path / f"bad{bad}", 6, 2, SMALL)
        assert not (tmp_path / f"bad{bad}").exists() and siblings(tmp_path / f"bad{bad}") == []


def test_disease_does_not_depend_on_the_grid():
    coarse = synth.synthesize("A", synth.case_seed(0, 4), SMALL)
    fine = synth.synthesize("A", synth.case_seed(0, 4), synth.config_for(spacing=6.0))
    assert coarse.disease == fine.disease
    assert coarse.organ_suv == fine.organ_suv
    assert coarse.lesions_requested == fine.lesions_requested


# -- the manifest describes the label it ships with ---------------------------------------------
def test_manifest_matches_label_and_pet(cohort, manifest):
    vox_ml = float(np.prod(SMALL.spacing)) / 1000
    assert manifest["voxel_volume_ml"] == pytest.approx(vox_ml)
    for case in manifest["cases"]:
        label = load(cohort / case["files"]["label"])
        pet = load(cohort / case["files"]["PET"]).astype(np.float64)
        comps, n = cc3d.connected_components(label, connectivity=18, return_N=True)
        strata, lesions = case["strata"], case["lesions"]
        assert n == strata["lesion_count"] == len(lesions) >= 1
        seen = set()
        for les in lesions:
            cid = comps[tuple(les["centre_voxel"])]
            assert cid > 0 and cid not in seen, (case["id"], les["index"])
            seen.add(cid)
            comp = comps == cid
            assert les["n_voxels"] == int(comp.sum())
            assert les["volume_ml"] == pytest.approx(comp.sum() * vox_ml, abs=1e-3)
            assert les["suvmax"] == pytest.approx(pet[comp].max(), rel=1e-4, abs=1e-4)
            assert les["suvmean"] == pytest.approx(pet[comp].mean(), rel=1e-4, abs=1e-4)
            assert comps[tuple(les["suvmax_voxel"])] == cid
            assert pet[tuple(les["suvmax_voxel"])] == pytest.approx(les["suvmax"], abs=1e-4)
            world = synth.case_affine(SMALL) @ np.array([*les["centre_voxel"], 1.0])
            assert les["centre_mm"] == pytest.approx(world[:3].tolist(), abs=0.01)
            assert les["site"] in {"bone", "lymph node", "prostate bed"}
        fg = label > 0
        assert strata["tmtv_ml"] == pytest.approx(fg.sum() * vox_ml, abs=1e-3)
        assert strata["suvmax"] == pytest.approx(pet[fg].max(), abs=1e-4)
        assert strata["tla"] == pytest.approx(pet[fg].sum() * vox_ml, rel=1e-4)
        assert strata["dmax_cm"] == pytest.approx(dmax_mm_reference(fg, SMALL.spacing) / 10, abs=1e-3)


def test_label_strata_by_hand():
    label = np.zeros((10, 10, 10), np.uint8)
    pet = np.zeros(label.shape, np.float32)
    label[1, 1, 1] = label[7, 5, 1] = 1
    pet[1, 1, 1], pet[7, 5, 1] = 3.0, 5.0
    s = synth.label_strata(label, pet, (2.0, 2.0, 3.0))
    assert s["lesion_count"] == 2
    assert s["tmtv_ml"] == pytest.approx(2 * 0.012)
    assert s["suvmax"] == 5.0 and s["suvmean"] == 4.0
    assert s["tla"] == pytest.approx(8 * 0.012)
    assert s["dmax_cm"] == pytest.approx(np.hypot(12.0, 8.0) / 10, abs=1e-4)
    label[1, 2, 2] = 1  # an edge neighbour of (1, 1, 1): joins it under 18-connectivity
    assert synth.label_strata(label, pet, (1, 1, 1))["lesion_count"] == 2
    label[2, 3, 3] = 1  # a corner neighbour of (1, 2, 2) only: a lesion of its own
    assert synth.label_strata(label, pet, (1, 1, 1))["lesion_count"] == 3
    assert synth.label_strata(np.zeros_like(label), pet, (1, 1, 1))["dmax_cm"] == 0.0


# -- the cohort spans the study's strata ---------------------------------------------------------
def test_cohort_spans_the_strata(manifest):
    cases = manifest["cases"]
    col = {k: np.array([c["strata"][k] for c in cases], float) for k in cases[0]["strata"]}
    count, tmtv, suvmax, dmax = col["lesion_count"], col["tmtv_ml"], col["suvmax"], col["dmax_cm"]
    assert count.min() == 1 and count.max() >= 10
    assert (count <= 5).sum() >= N_COHORT // 3  # many oligometastatic patients
    assert (count >= 16).sum() >= 2              # and some disseminated
    assert (tmtv < 2).sum() >= 3 and (tmtv > 20).sum() >= 3
    assert (suvmax < 5).sum() >= 1 and (suvmax > 30).sum() >= 2
    assert (dmax < 5).sum() >= 3 and (dmax > 30).sum() >= 5
    lesions = [les for c in cases for les in c["lesions"]]
    volumes = np.array([les["volume_ml"] for les in lesions])
    # the reference code's lesion size classes: < 1.5, 1.5-4, >= 4 mL
    assert (volumes < 1.5).sum() >= 20 and ((volumes >= 1.5) & (volumes < 4)).sum() >= 10
    assert (volumes >= 4).sum() >= 10 and volumes.max() > 20
    assert {les["site"] for les in lesions} == {"bone", "lymph node", "prostate bed"}
    assert {"spine", "pelvis", "pelvic", "retroperitoneal"} <= {les["region"] for les in lesions}
    single_pelvic = [c for c in cases if len(c["lesions"]) == 1 and c["lesions"][0]["region"] in
                     ("pelvic", "prostate bed")]
    assert single_pelvic  # the least spread pattern exists
    assert all(sum(les["site"] == "prostate bed" for les in c["lesions"]) <= 1 for c in cases)


# -- files and layout -----------------------------------------------------------------------------
def test_nnunet_layout_and_nifti_headers(cohort, manifest):
    dataset = json.loads((cohort / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT", "1": "PET"}
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["file_ending"] == ".nii.gz"
    train = [c for c in manifest["cases"] if c["split"] == "train"]
    test = [c for c in manifest["cases"] if c["split"] == "test"]
    assert len(test) == round(N_COHORT * 0.2) and dataset["numTraining"] == len(train) == N_COHORT - len(test)
    assert sorted(p.name for p in (cohort / "imagesTr").iterdir()) == sorted(
        f"{c['id']}_000{k}.nii.gz" for c in train for k in (0, 1))
    assert sorted(p.name for p in (cohort / "labelsTs").iterdir()) == sorted(f"{c['id']}.nii.gz" for c in test)
    assert [c["id"] for c in manifest["cases"]] == [f"PSMA-SYN-{i:03d}" for i in range(N_COHORT)]
    assert all(c["seed"] == 0 for c in manifest["cases"])
    affine = synth.case_affine(SMALL)
    assert np.allclose(np.diag(affine)[:3], SMALL.spacing)
    case = test[0]
    for key, dtype in (("CT", np.int16), ("PET", np.float32), ("label", np.uint8)):
        path = cohort / case["files"][key]
        assert path.parent.name == ("labelsTs" if key == "label" else "imagesTs")
        img = nib.load(str(path))
        assert img.shape == SMALL.shape and img.get_data_dtype() == dtype
        assert np.allclose(img.affine, affine) and img.header.get_zooms() == SMALL.spacing
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert set(np.unique(load(cohort / case["files"]["label"]))) <= {0, 1}


def test_tissues_have_plausible_hu_and_suv():
    whole_body = synth.SynthConfig(shape=synth.WHOLE_BODY_SHAPE)  # 4 mm, thighs to orbits
    case = synth.synthesize("A", synth.case_seed(0, 1), whole_body)
    t, ct, pet = case.tissue, case.ct, case.pet
    T = {name: t == code for code, name in enumerate(synth.TISSUES)}

    def med(img, name):
        assert T[name].sum() > 0, name
        return float(np.median(img[T[name]]))

    assert ct.shape == whole_body.shape and np.array_equal(ct, np.rint(ct))
    assert pet[0, 0, 0] == 0 and abs(ct[0, 0, 0] + 1000) < 60  # air in the corner
    assert med(ct, "air") == pytest.approx(-1000, abs=5)
    assert -900 < med(ct, "lung") < -800
    assert -130 < med(ct, "fat") < -70
    assert 15 < med(ct, "soft tissue") < 65
    assert 180 < med(ct, "trabecular bone") < 420 and med(ct, "cortical bone") > 700
    assert 0.2 < med(pet, "soft tissue") < 0.8 and med(pet, "lung") < 0.4 and med(pet, "air") == 0
    assert med(pet, "kidney") > 10 and med(pet, "kidney") > 2 * med(pet, "liver")
    assert 2.5 < med(pet, "liver") < 7.5
    assert med(pet, "bladder") > 8
    assert med(pet, "parotid") > 3 and med(pet, "submandibular") > 3
    # anatomy: lungs above the kidneys above the bladder; liver on the right, spleen on the left
    z = {n: np.argwhere(T[n])[:, 2].mean() for n in ("lung", "kidney", "bladder", "parotid")}
    assert z["parotid"] > z["lung"] > z["kidney"] > z["bladder"]
    x = {n: np.argwhere(T[n])[:, 0].mean() for n in ("liver", "spleen")}
    assert x["liver"] > ct.shape[0] / 2 > x["spleen"]  # RAS: +x is the patient's right
    # the default field of view stops at the lung bases: kidneys and bladder in, the head's glands out
    default = synth.synthesize("A", synth.case_seed(0, 1)).tissue
    assert default.shape[2] < t.shape[2]
    assert all((default == synth.TISSUES.index(n)).any() for n in ("kidney", "bladder", "liver", "lung"))
    assert not any((default == synth.TISSUES.index(n)).any() for n in ("parotid", "submandibular", "lacrimal"))
    for name, (mean, sd) in {"kidney": (20.0, 4.6), "liver": (5.0, 0.7), "spleen": (4.0, 1.5)}.items():
        assert 0.3 * mean <= case.organ_suv[name] <= mean + 6 * sd


# -- writing safely ---------------------------------------------------------------------------------
def test_refuses_to_overwrite_and_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LossbenchError, match="not empty"):
        synth.generate_cohort(out, 2, 0, SMALL)
    assert (out / "keep.txt").read_text() == "mine" and siblings(out) == []
    synth.generate_cohort(out, 2, 0, SMALL, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file() and siblings(out) == []

    calls = []

    def boom(case_id, rng_or_seed, config=None):
        calls.append(case_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(case_id, rng_or_seed, config)

    real = synth.synthesize
    monkeypatch.setattr(synth.cohort, "synthesize", boom)
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        synth.generate_cohort(fresh, 3, 0, SMALL)
    assert not fresh.exists() and siblings(fresh) == []
    calls.clear()
    with pytest.raises(KeyboardInterrupt):  # an interrupted overwrite keeps the old cohort
        synth.generate_cohort(out, 3, 0, SMALL, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["n_cases"] == 2 and siblings(out) == []


def test_bad_parameters_are_user_errors(tmp_path):
    with pytest.raises(ParameterError):
        synth.SynthConfig(shape=(4, 4, 4))
    with pytest.raises(ParameterError):
        synth.SynthConfig(spacing=(4.0, 0.0, 4.0))
    with pytest.raises(ParameterError, match="site_weights_few"):
        synth.SynthConfig(site_weights_few=(("liver", 1.0),))
    with pytest.raises(ParameterError, match="count group"):
        synth.SynthConfig(count_groups=(("none", 0, 3, 1.0),))
    with pytest.raises(LossbenchError, match="at least 1 case"):
        synth.generate_cohort(tmp_path / "x", 0, 0, SMALL)
    assert not (tmp_path / "x").exists()


def test_default_cohort_is_cached_and_race_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_HOME", str(tmp_path / "home"))
    path = synth.default_cohort(n_cases=2, config=SMALL)
    key = synth.cohort_key(SMALL, 2, synth.DEFAULT_SEED, 0.2)
    assert path == tmp_path / "home" / "cache" / f"psma-synth-{key}"
    before = digest(path)
    monkeypatch.setattr(synth.cohort, "_write_cohort", lambda *a, **k: pytest.fail("regenerated a cached cohort"))
    assert synth.default_cohort(n_cases=2, config=SMALL) == path and digest(path) == before
    monkeypatch.undo()

    # another process finishes first: ours is discarded, theirs is kept
    cache = tmp_path / "cache2"
    final = cache / f"psma-synth-{synth.cohort_key(SMALL, 2, 0, 0.2)}"
    real = synth.cohort._write_cohort

    def racing(root, *args):
        result = real(root, *args)
        final.mkdir(parents=True)
        (final / "manifest.json").write_text('{"theirs": true}')
        return result

    monkeypatch.setattr(synth.cohort, "_write_cohort", racing)
    assert synth.default_cohort(cache, n_cases=2, config=SMALL) == final
    assert json.loads((final / "manifest.json").read_text()) == {"theirs": True}
    assert sorted(p.name for p in cache.iterdir()) == [final.name]
    # the key covers what changes the content
    assert len({synth.cohort_key(SMALL, 2, 0, 0.2), synth.cohort_key(SMALL, 3, 0, 0.2),
                synth.cohort_key(SMALL, 2, 1, 0.2), synth.cohort_key(synth.SynthConfig(), 2, 0, 0.2)}) == 4


# -- the CLI ------------------------------------------------------------------------------------------
def test_cli_writes_a_cohort_and_refuses_to_overwrite(tmp_path):
    env = {**os.environ, "LOSSBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("LOSSBENCH_DEBUG", None)
    out = tmp_path / "cli-cohort"
    cmd = [sys.executable, "-m", "lossbench", "data", "synth", "--out", str(out), "--cases", "3", "--seed", "5",
           "--spacing", "8", "--test-fraction", "0.34"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_cases"] == 3 and manifest["seed"] == 5 and manifest["n_test"] == 1
    assert manifest["shape"] == list(SMALL.shape) and manifest["spacing_mm"] == [8.0, 8.0, 8.0]
    assert str(out) in " ".join(done.stdout.split()) and "lesions" in done.stdout
    assert len(list((out / "imagesTr").glob("*.nii.gz"))) == 4

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 1
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not empty" in lines[0]

    bad = subprocess.run([*cmd[:5], "--out", str(tmp_path / "y"), "--shape", "9,9"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "--shape" in bad.stderr

    forced = subprocess.run([*cmd, "--overwrite", "--cases", "2"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "manifest.json").read_text())["n_cases"] == 2


def test_the_cli_makes_the_default_cohort_size():
    import inspect

    from lossbench_psma.commands import synth as synth_command

    assert inspect.signature(synth_command).parameters["cases"].default.default == synth.DEFAULT_N_CASES == 64


def test_the_test_set_spans_the_lesion_count_and_burden_strata():
    from lossbench_psma.synth.cohort import stratified_test_indices

    # 40 cases: lesion counts 1..40 (case i has i+1 lesions) and TMTV growing with them
    strata = [{"lesion_count": i + 1, "tmtv_ml": 0.5 * (i + 1)} for i in range(40)]
    picked = stratified_test_indices(strata, 8, seed=0)
    assert len(picked) == 8 and picked == sorted(picked)
    assert all(5 * j <= i < 5 * (j + 1) for j, i in enumerate(picked))  # one from every fifth of the order
    assert picked == stratified_test_indices(strata, 8, seed=0)        # deterministic
    assert stratified_test_indices(strata, 0, seed=0) == []
    # the order is by count then TMTV, not by case index
    reversed_strata = list(reversed(strata))
    assert sorted(39 - i for i in stratified_test_indices(reversed_strata, 8, seed=0)) == picked

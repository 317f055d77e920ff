"""``lossbench evaluate`` end to end: the real executable on NIfTI files written into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
VOXEL_ML = 2 * 2 * 3 / 1000


def lossbench(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "LOSSBENCH_HOME": str(cwd / "home")}
    env.pop("LOSSBENCH_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "lossbench", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def save(path, array, dtype=np.uint8, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=dtype), affine), str(path))


@pytest.fixture
def study(tmp_path):
    """Two cases. p1: perfect. p2: misses lesion 2 and adds a 1-voxel FP far away."""
    for name in ("pred", "gt", "pet"):
        (tmp_path / name).mkdir()
    gt = np.zeros((12, 12, 12))
    gt[1:4, 1:4, 1:4] = 1  # 27 voxels
    gt[8:10, 8:10, 8:10] = 1  # 8 voxels
    pet = np.ones((12, 12, 12))
    pet[2, 2, 2] = 7.0
    pet[9, 9, 9] = 5.0
    miss = gt.copy()
    miss[8:10, 8:10, 8:10] = 0
    miss[0, 11, 11] = 1
    for case, pred in (("p1", gt), ("p2", miss)):
        save(tmp_path / "gt" / f"{case}.nii.gz", gt)
        save(tmp_path / "pred" / f"{case}.nii.gz", pred)
    save(tmp_path / "pet" / "p1.nii.gz", pet, dtype=np.float32)
    save(tmp_path / "pet" / "p2_0001.nii.gz", pet, dtype=np.float32)  # nnU-Net channel name
    return tmp_path


def args(*extra: str) -> list[str]:
    return ["evaluate", "--pred", "pred", "--gt", "gt", "--pet", "pet", *extra]


def test_evaluate_writes_both_tables_and_prints_a_summary(study):
    res = lossbench(*args("--out", "out/cases.csv"), cwd=study)
    assert res.returncode == 0, res.stderr
    cases = pd.read_csv(study / "out" / "cases.csv")
    lesions = pd.read_csv(study / "out" / "cases_lesions.csv")
    assert cases["case_id"].tolist() == ["p1", "p2"]
    assert cases[["tp", "fp", "fn"]].values.tolist() == [[2, 0, 0], [1, 1, 1]]
    assert cases["dice"].tolist() == pytest.approx([1.0, 2 * 27 / (35 + 28)])
    assert cases["fp_volume_ml"].tolist() == pytest.approx([0.0, VOXEL_ML])
    assert cases["fn_volume_ml"].tolist() == pytest.approx([0.0, 8 * VOXEL_ML])
    assert cases["gt_suvmax"].tolist() == [7.0, 7.0]
    assert set(cases["stratum_count"]) == {"2-5"} and set(cases["stratum_volume"]) == {"<4"}
    assert lesions["case_id"].tolist() == ["p1", "p1", "p2", "p2"]
    assert lesions["detected"].tolist() == [True, True, True, False]
    assert lesions["volume_ml"].tolist() == pytest.approx([27 * VOXEL_ML, 8 * VOXEL_ML] * 2)
    assert "pooled" in res.stdout and "p2" in res.stdout
    assert res.stderr == ""


def test_json_is_one_document_on_stdout(study):
    import json

    res = lossbench(*args("--out", "out/cases.csv", "--json"), cwd=study)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # nothing else on stdout
    assert doc["n_cases"] == 2 and [c["case_id"] for c in doc["cases"]] == ["p1", "p2"]
    assert [[c["tp"], c["fp"], c["fn"]] for c in doc["cases"]] == [[2, 0, 0], [1, 1, 1]]
    assert doc["summary"]["tp"]["pooled"] == 3 and doc["out"] == "out/cases.csv"
    assert (study / "out" / "cases_lesions.csv").exists()


def test_parquet_output_and_options(study):
    res = lossbench(
        *args("--out", "c.parquet", "--lesions-out", "l.csv", "--criterion", "1", "--strata", "quantile"),
        cwd=study,
    )
    assert res.returncode == 0, res.stderr
    cases = pd.read_parquet(study / "c.parquet")
    assert cases["criterion"].tolist() == [1, 1]
    assert cases[["tp", "fp", "fn"]].values.tolist() == [[2, 0, 0], [1, 1, 1]]
    assert len(pd.read_csv(study / "l.csv")) == 4
    assert not (study / "c_lesions.parquet").exists()


def assert_one_line_error(res, *fragments: str) -> None:
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in res.stderr


def test_missing_case_is_one_line_error_and_writes_nothing(study):
    (study / "pred" / "p2.nii.gz").unlink()
    res = lossbench(*args("--out", "out/cases.csv"), cwd=study)
    assert_one_line_error(res, "missing prediction", "p2")
    assert not (study / "out").exists()


def test_geometry_mismatch_is_one_line_error_and_leaves_previous_results_alone(study):
    (study / "out").mkdir()
    (study / "out" / "cases.csv").write_text("previous\n")
    shifted = AFFINE.copy()
    shifted[2, 3] = 4.0
    save(study / "pet" / "p2_0001.nii.gz", np.ones((12, 12, 12)), dtype=np.float32, affine=shifted)
    res = lossbench(*args("--out", "out/cases.csv"), cwd=study)
    assert_one_line_error(res, "case 'p2'", "geometry mismatch")
    assert sorted(p.name for p in (study / "out").iterdir()) == ["cases.csv"]
    assert (study / "out" / "cases.csv").read_text() == "previous\n"


def test_bad_mask_and_bad_options_are_one_line_errors(study):
    labels = np.zeros((12, 12, 12))
    labels[5, 5, 5] = 2
    save(study / "pred" / "p1.nii.gz", labels)
    assert_one_line_error(lossbench(*args(), cwd=study), "case 'p1'", "not binary")
    assert_one_line_error(lossbench(*args("--criterion", "4"), cwd=study), "--criterion")
    assert_one_line_error(lossbench(*args("--connectivity", "8"), cwd=study), "--connectivity")
    assert_one_line_error(lossbench(*args("--out", "x.xlsx"), cwd=study), ".csv or .parquet")
    assert not any(p.suffix in (".csv", ".parquet") for p in study.iterdir())

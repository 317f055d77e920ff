"""Strata, the cohort summary, NIfTI matching/geometry and atomic table writing."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lossbench.errors import LossbenchError
from lossbench.evaluation import evaluate_folders, lesion_size_class, stratify, summarize
from lossbench.evaluation.io import check_geometry, find_cases, read_image, write_tables
from lossbench.evaluation.strata import quantile_edges, strata_labels


def gt_table(count, tmtv, suvmax, dmax) -> pd.DataFrame:
    return pd.DataFrame(
        {"gt_lesion_count": count, "gt_tmtv_ml": tmtv, "gt_suvmax": suvmax, "gt_dmax_cm": dmax}
    )


# ------------------------------------------------------------------------------------------- strata


def test_fixed_strata_edges_are_half_open_and_empty_cases_are_none():
    df = gt_table(
        count=[0, 1, 2, 5, 6, 40],
        tmtv=[0.0, 3.99, 4.0, 19.9, 20.0, 300.0],
        suvmax=[0.0, 9.99, 10.0, 24.9, 25.0, 80.0],
        dmax=[0.0, 0.5, 5.0, 19.99, 20.0, 60.0],
    )
    out = stratify(df)
    assert list(out["stratum_count"]) == ["none", "1", "2-5", "2-5", ">5", ">5"]
    assert list(out["stratum_volume"]) == ["none", "<4", "4-20", "4-20", ">=20", ">=20"]
    assert list(out["stratum_activity"]) == ["none", "<10", "10-25", "10-25", ">=25", ">=25"]
    assert list(out["stratum_spread"]) == ["none", "<5", "5-20", "5-20", ">=20", ">=20"]
    assert "stratum_count" not in df.columns  # a copy, the input is untouched


def test_quantile_strata_are_cohort_tertiles_of_cases_with_lesions():
    df = gt_table(
        count=[0, 1, 1, 1, 1, 1, 2, 3, 8, 9],
        tmtv=[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        suvmax=[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        dmax=[0.0, 9, 8, 7, 6, 5, 4, 3, 2, 1],
    )
    edges = quantile_edges([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert edges == pytest.approx((np.quantile(range(1, 10), 1 / 3), np.quantile(range(1, 10), 2 / 3)))
    out = stratify(df, "quantile")
    assert out["stratum_volume"].iloc[0] == "none"
    assert out["stratum_volume"].iloc[1:].value_counts().to_dict() == {"<3.67": 3, "3.67-6.33": 3, ">=6.33": 3}
    # Lesion count has ties at the bottom: the lower tertile equals the minimum (1) and is dropped,
    # leaving two strata split at the upper tertile 2 + (1/3)(3 - 2).
    assert quantile_edges([1, 1, 1, 1, 1, 2, 3, 8, 9]) == pytest.approx((7 / 3,))
    assert out["stratum_count"].tolist() == ["none"] + ["<2.33"] * 6 + [">=2.33"] * 3


def test_strata_helpers():
    assert strata_labels([]) == ["all"]
    assert strata_labels([1.5, 4]) == ["<1.5", "1.5-4", ">=4"]
    classes = [lesion_size_class(v) for v in (0.1, 1.49, 1.5, 3.99, 4.0)]
    assert classes == ["small", "small", "medium", "medium", "large"]
    with pytest.raises(LossbenchError, match="strata scheme"):
        stratify(gt_table([1], [1.0], [1.0], [1.0]), "deciles")
    with pytest.raises(LossbenchError, match="gt_dmax_cm"):
        stratify(pd.DataFrame({"gt_lesion_count": [1], "gt_tmtv_ml": [1.0], "gt_suvmax": [2.0]}))


# ------------------------------------------------------------------------------------------ summary


def test_summary_pools_counts_and_describes_per_case_values():
    cases = pd.DataFrame(
        {
            "dice": [0.5, 1.0, math.nan],
            "tp": [1, 3, 0],
            "fp": [1, 0, 2],
            "fn": [0, 1, 0],
            "sensitivity": [1.0, 0.75, math.nan],
            "precision": [0.5, 1.0, 0.0],
            "f1": [2 / 3, 6 / 7, 0.0],
            "fp_volume_ml": [0.5, 0.0, 2.0],
            "fn_volume_ml": [0.0, 1.0, 0.0],
        }
    )
    s = summarize(cases)
    assert s.at["tp", "pooled"] == 4 and s.at["fp", "pooled"] == 3 and s.at["fn", "pooled"] == 1
    assert s.at["sensitivity", "pooled"] == pytest.approx(4 / 5)
    assert s.at["precision", "pooled"] == pytest.approx(4 / 7)
    assert s.at["f1", "pooled"] == pytest.approx(8 / 12)
    assert s.at["fp_volume_ml", "pooled"] == pytest.approx(2.5)
    assert math.isnan(s.at["dice", "pooled"])
    assert s.at["dice", "mean"] == pytest.approx(0.75) and s.at["dice", "n"] == 2  # NaN left out
    assert s.at["dice", "median"] == pytest.approx(0.75)
    assert s.at["sensitivity", "sd"] == pytest.approx(np.std([1.0, 0.75], ddof=1))
    assert s.at["fp_volume_ml", "q1"] == pytest.approx(0.25) and s.at["fp_volume_ml", "q3"] == pytest.approx(1.25)
    assert "tp_c1" not in s.index  # only the metrics present are summarised


# --------------------------------------------------------------------------------------------- I/O


def save(path, array, affine=None, dtype=np.uint8):
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine)
    nib.save(img, str(path))


@pytest.fixture
def folders(tmp_path):
    dirs = {name: tmp_path / name for name in ("pred", "gt", "pet")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def test_find_cases_accepts_both_pet_names_and_reports_extra_predictions(folders):
    m = np.zeros((4, 4, 4))
    for case in ("a", "b"):
        save(folders["gt"] / f"{case}.nii.gz", m)
        save(folders["pred"] / f"{case}.nii.gz", m)
    save(folders["pred"] / "c.nii", m)
    save(folders["pet"] / "a.nii.gz", m, dtype=np.float32)
    save(folders["pet"] / "b_0001.nii.gz", m, dtype=np.float32)
    save(folders["pet"] / "b_0000.nii.gz", m, dtype=np.float32)  # CT channel: ignored
    (folders["gt"] / "notes.txt").write_text("not an image")
    cases, extra = find_cases(folders["pred"], folders["gt"], folders["pet"])
    assert [(c.case_id, c.pet.name) for c in cases] == [("a", "a.nii.gz"), ("b", "b_0001.nii.gz")]
    assert extra == ["c"]


def test_find_cases_errors_name_the_cases(folders):
    m = np.zeros((4, 4, 4))
    save(folders["gt"] / "a.nii.gz", m)
    with pytest.raises(LossbenchError, match=r"missing prediction for case.*a"):
        find_cases(folders["pred"], folders["gt"], folders["pet"])
    save(folders["pred"] / "a.nii.gz", m)
    with pytest.raises(LossbenchError, match=r"missing PET for case.*a"):
        find_cases(folders["pred"], folders["gt"], folders["pet"])
    save(folders["pet"] / "a.nii.gz", m)
    save(folders["pet"] / "a_0001.nii.gz", m)
    with pytest.raises(LossbenchError, match=r"both.*a"):
        find_cases(folders["pred"], folders["gt"], folders["pet"])
    with pytest.raises(LossbenchError, match="does not exist"):
        find_cases(folders["pred"] / "nope", folders["gt"], folders["pet"])
    with pytest.raises(LossbenchError, match="no NIfTI files"):
        find_cases(folders["gt"], folders["pred"] / "..", folders["pet"])


def test_read_image_and_geometry_checks(tmp_path):
    save(tmp_path / "m.nii.gz", np.ones((3, 4, 5)))
    img = read_image(tmp_path / "m.nii.gz")
    assert img.array.shape == (3, 4, 5) and img.spacing == (2.0, 2.0, 3.0)
    shifted = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted[0, 3] = 0.5
    save(tmp_path / "s.nii.gz", np.ones((3, 4, 5)), affine=shifted)
    save(tmp_path / "t.nii.gz", np.ones((3, 4, 6)))
    with pytest.raises(LossbenchError, match=r"case 'k': geometry mismatch: the affines"):
        check_geometry("k", {"gt": img, "pred": read_image(tmp_path / "s.nii.gz")})
    with pytest.raises(LossbenchError, match=r"case 'k': geometry mismatch: pred has shape"):
        check_geometry("k", {"gt": img, "pred": read_image(tmp_path / "t.nii.gz")})
    check_geometry("k", {"gt": img, "pred": read_image(tmp_path / "s.nii.gz")}, affine_tol=1.0)
    (tmp_path / "bad.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(LossbenchError, match="cannot read NIfTI"):
        read_image(tmp_path / "bad.nii.gz")


def test_write_tables_is_atomic(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    write_tables([(df, tmp_path / "t.csv"), (df, tmp_path / "sub" / "t.parquet")])
    assert pd.read_csv(tmp_path / "t.csv")["a"].tolist() == [1, 2]
    back = pd.read_parquet(tmp_path / "sub" / "t.parquet")["b"]
    assert back.iloc[0] == "x" and pd.isna(back.iloc[1])
    # A failure in the second table leaves the first target untouched and no temporary file behind.
    (tmp_path / "t.csv").write_text("old\n")

    class Boom(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(LossbenchError, match="disk full"):
        write_tables([(df, tmp_path / "t.csv"), (Boom(df), tmp_path / "u.parquet")])
    assert (tmp_path / "t.csv").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "t.csv"]
    with pytest.raises(LossbenchError, match=r"\.csv or \.parquet"):
        write_tables([(df, tmp_path / "t.xlsx")])


def test_evaluate_folders_end_to_end(folders):
    gt = np.zeros((6, 6, 6))
    gt[1:3, 1:3, 1:3] = 1
    gt[5, 5, 5] = 1
    pred = gt.copy()
    pred[5, 5, 5] = 0
    pet = np.ones((6, 6, 6))
    for case, p in (("p1", pred), ("p2", gt)):
        save(folders["gt"] / f"{case}.nii.gz", gt)
        save(folders["pred"] / f"{case}.nii.gz", p)
        save(folders["pet"] / f"{case}_0001.nii.gz", pet, dtype=np.float32)
    cases, lesions = evaluate_folders(folders["pred"], folders["gt"], folders["pet"])
    assert cases["case_id"].tolist() == ["p1", "p2"]
    assert cases["fn"].tolist() == [1, 0] and cases["tp"].tolist() == [1, 2]
    assert cases["voxel_volume_ml"].tolist() == pytest.approx([0.012, 0.012])
    assert cases["stratum_count"].tolist() == ["2-5", "2-5"]
    assert len(lesions) == 4 and lesions["detected"].tolist() == [True, False, True, True]

"""evaluate_case on hand-built volumes whose answers are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossbench.errors import LossbenchError
from lossbench.evaluation import CASE_COLUMNS, LESION_COLUMNS, evaluate_case

S = (10, 10, 10)


def box(*ranges: tuple[int, int], shape: tuple[int, ...] = S) -> np.ndarray:
    """Binary mask with True on the inclusive index ranges, one (first, last) pair per axis."""
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b + 1) for a, b in ranges)] = True
    return m


def counts(case: dict, k: int) -> tuple[int, int, int]:
    return case[f"tp_c{k}"], case[f"fp_c{k}"], case[f"fn_c{k}"]


def test_overlap_missing_the_hottest_voxel_is_fp_under_c3_but_tp_under_c1():
    gt = box((1, 4), (1, 4), (1, 4))  # 64 voxels
    pet = np.ones(S)
    pet[4, 4, 4] = 10.0  # the lesion's SUVmax voxel
    pred = box((1, 2), (1, 2), (1, 2))  # 8 voxels inside the lesion, not the hot corner
    case = evaluate_case(pred, gt, pet, (1, 1, 1)).case
    assert counts(case, 1) == (1, 0, 0)
    assert counts(case, 2) == (0, 1, 1)  # IoU 8/64 < 0.5
    assert counts(case, 3) == (0, 1, 1)
    assert (case["tp"], case["fp"], case["fn"]) == (0, 1, 1)  # headline = criterion 3
    assert case["f1_c1"] == 1.0 and case["f1_c3"] == 0.0
    assert case["dice"] == pytest.approx(2 * 8 / (64 + 8))
    # The component touches the lesion, so it is neither FP volume nor does the lesion count as FN volume.
    assert case["fp_volume_ml"] == 0.0 and case["fn_volume_ml"] == 0.0


def test_hottest_voxel_covered_by_a_component_matched_to_another_lesion_is_fn():
    a = box((1, 2), (1, 2), (1, 2))  # lesion A: 8 voxels, hottest (2, 2, 2)
    b = box((4, 7), (1, 4), (1, 4))  # lesion B: 64 voxels, hottest (5, 2, 2); x = 3 separates them
    pet = np.ones(S)
    pet[2, 2, 2] = 9.0
    pet[5, 2, 2] = 8.0
    pred = box((2, 7), (1, 4), (1, 4))  # 96 voxels: 4 of A (with its hottest voxel) and all of B
    res = evaluate_case(pred, a | b, pet, (1, 1, 1))
    case = res.case
    # IoU with A = 4 / (96 + 8 - 4) = 0.04, with B = 64 / 96: the best match is B.
    assert counts(case, 1) == (1, 0, 0)
    assert counts(case, 2) == (1, 0, 1)
    assert counts(case, 3) == (1, 0, 1)
    les_a, les_b = res.lesions
    assert (les_a["hottest_x"], les_a["hottest_y"], les_a["hottest_z"]) == (2, 2, 2)
    assert les_a["detected_c1"] and not les_a["detected_c3"] and les_a["matched_pred_c3"] == 0
    assert les_b["detected_c3"] and les_b["matched_pred_c3"] == 1
    assert les_a["best_iou"] == pytest.approx(0.04) and les_b["best_iou"] == pytest.approx(64 / 96)
    # Lesion-wise Dice against the union of the overlapping components (here the one component).
    assert les_a["dice"] == pytest.approx(2 * 4 / (8 + 96))
    assert les_b["dice"] == pytest.approx(2 * 64 / (64 + 96))


def test_same_component_loses_when_the_best_match_hottest_voxel_is_outside():
    a = box((1, 2), (1, 2), (1, 2))
    b = box((4, 7), (1, 4), (1, 4))
    pet = np.ones(S)
    pet[2, 2, 2] = 9.0
    pet[7, 4, 4] = 8.0  # B's hottest voxel, left out of the prediction below
    pred = box((2, 6), (1, 4), (1, 4))  # 80 voxels: IoU with B = 48 / 96, with A = 4 / 84; misses (7, 4, 4)
    case = evaluate_case(pred, a | b, pet, (1, 1, 1)).case
    assert counts(case, 3) == (0, 1, 2)
    assert counts(case, 2) == (1, 0, 1)  # IoU exactly 0.5 passes the threshold (>=)


def test_prediction_without_overlap_is_fp_everywhere_with_fp_and_fn_volumes():
    gt = box((6, 8), (6, 8), (6, 8))  # 27 voxels
    pred = box((0, 1), (0, 1), (0, 0))  # 4 voxels, holds voxel (0, 0, 0) (the reference's null match)
    pet = np.full(S, 2.0)
    case = evaluate_case(pred, gt, pet, (2.0, 2.0, 2.0)).case
    for k in (1, 2, 3):
        assert counts(case, k) == (0, 1, 1)
    assert case["dice"] == 0.0
    assert case["fp_volume_ml"] == pytest.approx(4 * 8 / 1000)
    assert case["fn_volume_ml"] == pytest.approx(27 * 8 / 1000)
    assert case["sensitivity"] == 0.0 and case["precision"] == 0.0 and case["f1"] == 0.0


def test_empty_ground_truth():
    pred = box((1, 2), (1, 2), (1, 2)) | box((6, 7), (6, 7), (6, 7))
    res = evaluate_case(pred, np.zeros(S, bool), np.ones(S), (1, 1, 1))
    case = res.case
    assert res.lesions == []
    assert case["dice"] == 0.0  # GT empty, prediction not: 0 by policy
    for k in (1, 2, 3):
        assert counts(case, k) == (0, 2, 0)
        assert math.isnan(case[f"sensitivity_c{k}"])
        assert case[f"precision_c{k}"] == 0.0 and case[f"f1_c{k}"] == 0.0
    assert case["fp_volume_ml"] == pytest.approx(16 / 1000)
    assert case["gt_lesion_count"] == 0 and case["gt_suvmax"] == 0.0 and case["gt_dmax_cm"] == 0.0


def test_empty_prediction():
    gt = box((1, 2), (1, 2), (1, 2)) | box((6, 7), (6, 7), (6, 7))
    res = evaluate_case(np.zeros(S, np.uint8), gt, np.ones(S), (1, 1, 1))
    case = res.case
    assert case["dice"] == 0.0
    for k in (1, 2, 3):
        assert counts(case, k) == (0, 0, 2)
        assert case[f"sensitivity_c{k}"] == 0.0 and math.isnan(case[f"precision_c{k}"])
        assert case[f"f1_c{k}"] == 0.0
    assert case["fn_volume_ml"] == pytest.approx(16 / 1000)
    assert case["pred_lesion_count"] == 0 and case["pred_tmtv_ml"] == 0.0
    assert [les["n_pred_overlapping"] for les in res.lesions] == [0, 0]
    assert all(math.isnan(les["pred_suvmax"]) and les["dice"] == 0.0 for les in res.lesions)


def test_both_empty_dice_policy():
    empty = np.zeros(S, bool)
    case = evaluate_case(empty, empty, np.ones(S), (1, 1, 1)).case
    assert math.isnan(case["dice"])  # the study's 0/0
    assert math.isnan(case["f1"]) and case["tp"] == case["fp"] == case["fn"] == 0
    assert evaluate_case(empty, empty, np.ones(S), (1, 1, 1), empty_dice=1.0).case["dice"] == 1.0


def test_iou_tie_goes_to_the_lowest_label_in_fortran_scan_order():
    # Lesion A has the smaller z, lesion B the smaller x: the Fortran scan (x fastest, z slowest, the
    # NIfTI order) meets A first, so A is label 1, although C order would meet B first.
    a = box((6, 7), (1, 2), (1, 2))
    b = box((1, 2), (1, 2), (5, 6))
    # One component touching each lesion with 4 voxels: a slab at z = 3..4 plus one voxel layer each.
    pred = box((1, 7), (1, 2), (3, 4)) | box((6, 7), (1, 2), (2, 2)) | box((1, 2), (1, 2), (5, 5))
    pet = np.ones(S)
    pet[6, 1, 2] = 5.0  # A's hottest voxel, inside the component
    pet[1, 1, 5] = 5.0  # B's hottest voxel, inside the component too
    res = evaluate_case(pred, a | b, pet, (1, 1, 1))
    les1, les2 = res.lesions
    assert les1["centroid_x"] == pytest.approx(6.5) and les2["centroid_x"] == pytest.approx(1.5)
    assert les1["best_iou"] == les2["best_iou"] == pytest.approx(4 / (36 + 8 - 4))
    assert les1["detected_c3"] and not les2["detected_c3"]  # the tie went to label 1 (A)
    assert counts(res.case, 3) == (1, 0, 1)


def test_suvmax_voxel_ties_go_to_the_first_c_order_index():
    gt = box((1, 4), (1, 2), (1, 2))
    pet = np.ones(S)
    pet[1, 2, 2] = 5.0  # first in C order of (x, y, z)
    pet[3, 1, 1] = 5.0  # first in Fortran order
    near = box((1, 2), (1, 2), (1, 2))  # holds (1, 2, 2), not (3, 1, 1)
    res = evaluate_case(near, gt, pet, (1, 1, 1))
    les = res.lesions[0]
    assert (les["hottest_x"], les["hottest_y"], les["hottest_z"]) == (1, 2, 2)
    assert counts(res.case, 3) == (1, 0, 0)
    far = box((3, 4), (1, 2), (1, 2))  # holds (3, 1, 1) only
    assert counts(evaluate_case(far, gt, pet, (1, 1, 1)).case, 3) == (0, 1, 1)


def test_lesion_removed_from_the_pool_cannot_be_matched_again():
    gt = box((1, 6), (1, 2), (1, 2))  # 24 voxels
    pred = box((1, 2), (1, 2), (1, 2)) | box((5, 6), (1, 2), (1, 2))  # two components, IoU 1/3 each
    case = evaluate_case(pred, gt, np.ones(S), (1, 1, 1), iou_threshold=0.3).case
    assert counts(case, 2) == (1, 1, 0)  # the second one finds its best match gone: FP
    assert counts(case, 1) == (2, 0, 0)  # criterion 1 counts predictions


def test_biomarkers_and_volumes_with_anisotropic_spacing():
    spacing = (2.0, 1.0, 4.0)  # voxel = 8 mm³ = 0.008 mL
    gt = np.zeros(S, bool)
    gt[0, 0, 0] = True  # lesion 1: one voxel, SUV 3
    gt[3:5, 0, 1] = True  # lesion 2: two voxels at x = 3, 4, SUV 1 and 6
    pet = np.zeros(S)
    pet[0, 0, 0], pet[3, 0, 1], pet[4, 0, 1] = 3.0, 1.0, 6.0
    res = evaluate_case(gt.copy(), gt, pet, spacing)
    case = res.case
    assert case["voxel_volume_ml"] == pytest.approx(0.008)
    assert case["gt_tmtv_ml"] == pytest.approx(3 * 0.008)
    assert case["gt_suvmax"] == 6.0 and case["gt_suvmean"] == pytest.approx(10 / 3)
    assert case["gt_tla"] == pytest.approx(10 * 0.008)
    assert case["gt_lesion_count"] == 2
    # Farthest voxels: (0, 0, 0) and (4, 0, 1): sqrt((4·2)² + (1·4)²) mm = sqrt(80) mm.
    assert case["gt_dmax_cm"] == pytest.approx(math.sqrt(80) / 10)
    assert case["pred_dmax_cm"] == case["gt_dmax_cm"]
    les1, les2 = res.lesions
    assert les1["volume_ml"] == pytest.approx(0.008) and les2["volume_ml"] == pytest.approx(0.016)
    assert les2["suvmax"] == 6.0 and les2["suvmean"] == 3.5 and les2["tla"] == pytest.approx(7 * 0.008)
    assert (les2["centroid_x"], les2["centroid_y"], les2["centroid_z"]) == (3.5, 0.0, 1.0)
    assert les2["size_class"] == "small"


@pytest.mark.parametrize(("connectivity", "edge_pair", "corner_pair"), [(6, 2, 2), (18, 1, 2), (26, 1, 1)])
def test_connectivity(connectivity, edge_pair, corner_pair):
    edge = np.zeros(S, bool)
    edge[1, 1, 1] = edge[2, 2, 1] = True  # share an edge
    corner = np.zeros(S, bool)
    corner[1, 1, 1] = corner[2, 2, 2] = True  # share a corner
    pet = np.ones(S)
    assert evaluate_case(edge, edge, pet, (1, 1, 1), connectivity=connectivity).case["gt_lesion_count"] == edge_pair
    res = evaluate_case(corner, corner, pet, (1, 1, 1), connectivity=connectivity)
    assert res.case["gt_lesion_count"] == corner_pair and len(res.lesions) == corner_pair


def test_two_dimensional_input_is_one_slice():
    gt = np.zeros((8, 8), np.uint8)
    gt[1:3, 1:3] = 1
    gt[5, 5] = 1
    pred = gt.copy()
    pred[5, 5] = 0
    pet = np.arange(64, dtype=float).reshape(8, 8)
    case = evaluate_case(pred, gt, pet, (2.0, 2.0), connectivity=8).case
    assert case["gt_lesion_count"] == 2 and counts(case, 3) == (1, 0, 1)
    assert case["voxel_volume_ml"] == pytest.approx(4 / 1000)  # 2 × 2 × 1 mm
    assert case["gt_dmax_cm"] == pytest.approx(math.hypot(8, 8) / 10)


def test_headline_columns_follow_the_chosen_criterion_and_rows_have_all_columns():
    gt = box((1, 4), (1, 4), (1, 4))
    pet = np.ones(S)
    pet[4, 4, 4] = 10.0
    pred = box((1, 2), (1, 2), (1, 2))
    res = evaluate_case(pred, gt, pet, (1, 1, 1), criterion=1, case_id="p1")
    assert tuple(res.case) == CASE_COLUMNS
    assert all(tuple(row) == LESION_COLUMNS for row in res.lesions)
    assert res.case["case_id"] == "p1" and res.case["criterion"] == 1
    assert (res.case["tp"], res.case["fp"], res.case["fn"]) == (1, 0, 0)
    assert res.lesions[0]["detected"] and not res.lesions[0]["detected_c3"]


def test_memory_layout_does_not_change_the_result():
    rng = np.random.default_rng(3)
    gt = rng.random(S) < 0.2
    pred = rng.random(S) < 0.2
    pet = rng.integers(0, 4, S).astype(float)
    a = evaluate_case(pred, gt, pet, (1, 2, 3))
    b = evaluate_case(np.asfortranarray(pred), np.asfortranarray(gt), np.asfortranarray(pet), (1, 2, 3))
    c = evaluate_case(pred.astype(np.float32), gt.astype(np.int16), pet.astype(np.float32), (1, 2, 3))
    # Strided views (neither C- nor Fortran-contiguous) of the same voxels.
    big = np.zeros((2 * S[0], S[1], S[2]), bool)
    big[::2] = gt
    d = evaluate_case(pred, big[::2], pet, (1, 2, 3))
    assert a.case == b.case == c.case == d.case
    assert a.lesions == b.lesions == c.lesions == d.lesions


# ------------------------------------------------------------------------------------- input checks


def test_shape_mismatch_names_the_case():
    with pytest.raises(LossbenchError, match=r"case 'p7': shapes differ"):
        evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.zeros((4, 4, 4)), (1, 1, 1), case_id="p7")
    with pytest.raises(LossbenchError, match="PET"):
        evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.zeros((4, 4)), (1, 1, 1))


def test_non_binary_mask_is_rejected():
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[1, 1, 1] = 2
    with pytest.raises(LossbenchError, match=r"case 'x': ground-truth mask is not binary.*\b2\b"):
        evaluate_case(np.zeros((4, 4, 4)), gt, np.zeros((4, 4, 4)), (1, 1, 1), case_id="x")
    soft = np.full((4, 4, 4), 0.5)
    with pytest.raises(LossbenchError, match="prediction mask is not binary"):
        evaluate_case(soft, np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1, 1))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pet_is_rejected(bad):
    pet = np.ones((4, 4, 4))
    pet[3, 3, 3] = bad
    with pytest.raises(LossbenchError, match=r"case 'y': PET holds non-finite values"):
        evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), pet, (1, 1, 1), case_id="y")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connectivity": 8}, "connectivity 8"),
        ({"connectivity": 4}, "connectivity 4"),
        ({"iou_threshold": 0.0}, "IoU threshold"),
        ({"iou_threshold": 1.5}, "IoU threshold"),
        ({"criterion": 4}, "criterion"),
        ({"empty_dice": 2.0}, "empty_dice"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    m = np.zeros((4, 4, 4))
    with pytest.raises(LossbenchError, match=message):
        evaluate_case(m, m, m, (1, 1, 1), **kwargs)


@pytest.mark.parametrize("spacing", [(1, 1), (1, 1, 0), (1, -1, 1), (1, 1, float("nan"))])
def test_bad_spacing_is_rejected(spacing):
    m = np.zeros((4, 4, 4))
    with pytest.raises(LossbenchError, match="spacing"):
        evaluate_case(m, m, m, spacing)

"""Properties of evaluate_case and dmax_mm on random small volumes (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossbench.evaluation import dmax_mm, evaluate_case

from lossbench.evaluation import reference as _naive

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

spacings = st.tuples(*[st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0])] * 3)
connectivities = st.sampled_from([6, 18, 26])


@st.composite
def volumes(draw, max_side: int = 9, min_side: int = 1):
    """A random mask (blobs of boxes with noise), a PET with ties, and a seed-derived shape."""
    shape = tuple(draw(st.integers(min_side, max_side)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    for _ in range(draw(st.integers(0, 3))):  # a few solid boxes so that lesions have bulk
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(lo_ + 1, s + 1)) for lo_, s in zip(lo, shape, strict=True)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    pet = rng.integers(1, 4, shape).astype(np.float64)  # few values: many SUVmax ties
    return mask, pet, rng


@SETTINGS
@given(volumes(), spacings, connectivities)
def test_perfect_prediction(vol, spacing, connectivity):
    gt, pet, _ = vol
    case = evaluate_case(gt.copy(), gt, pet, spacing, connectivity=connectivity).case
    assert case["fp_volume_ml"] == 0.0 and case["fn_volume_ml"] == 0.0
    if gt.any():
        assert case["dice"] == 1.0
        for k in (1, 2, 3):
            assert case[f"f1_c{k}"] == 1.0
            assert case[f"fp_c{k}"] == case[f"fn_c{k}"] == 0
            assert case[f"tp_c{k}"] == case["gt_lesion_count"]
    for name in ("suvmax", "suvmean", "tmtv_ml", "tla", "lesion_count", "dmax_cm"):
        assert case[f"gt_{name}"] == case[f"pred_{name}"]


@SETTINGS
@given(volumes(max_side=7), volumes(max_side=7), spacings, connectivities, st.integers(1, 8))
def test_an_isolated_blob_adds_one_fp_and_its_volume(gt_vol, pred_vol, spacing, connectivity, blob_voxels):
    gt_small, pet_small, rng = gt_vol
    pred_small = pred_vol[0]
    # Put GT and prediction in one corner of a larger volume and the blob in the far corner.
    shape = (16, 16, 16)
    gt = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    pet = np.ones(shape)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(gt_small.shape, pred_small.shape, strict=True))
    gt[sl] = gt_small[sl]
    pred[sl] = pred_small[sl]
    pet[sl] = pet_small[sl]
    before = evaluate_case(pred, gt, pet, spacing, connectivity=connectivity).case
    blob = np.zeros(shape, bool)
    blob[12:, 12:, 12:] = rng.random((4, 4, 4)) < 0.3
    blob[12, 12, 12] = True
    # Keep the blob one component: take the component of (12, 12, 12) only.
    lab = _naive.label(blob, connectivity)[0]
    blob = lab == lab[12, 12, 12]
    after = evaluate_case(pred | blob, gt, pet, spacing, connectivity=connectivity).case
    voxel_ml = float(np.prod(spacing)) / 1000
    for k in (1, 2, 3):
        assert after[f"fp_c{k}"] == before[f"fp_c{k}"] + 1
        assert after[f"tp_c{k}"] == before[f"tp_c{k}"]
        assert after[f"fn_c{k}"] == before[f"fn_c{k}"]
    assert after["fp_volume_ml"] == pytest.approx(before["fp_volume_ml"] + blob.sum() * voxel_ml)
    assert after["fn_volume_ml"] == before["fn_volume_ml"]
    assert after["pred_lesion_count"] == before["pred_lesion_count"] + 1


@SETTINGS
@given(volumes(max_side=7), volumes(max_side=7), connectivities, st.sampled_from([0.1, 0.3, 0.5, 0.8]))
def test_counts_and_volumes_agree_with_the_plain_reference_algorithm(gt_vol, pred_vol, connectivity, threshold):
    gt, pet, _ = gt_vol
    pred = np.zeros_like(gt)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(gt.shape, pred_vol[0].shape, strict=True))
    pred[sl] = pred_vol[0][sl]
    spacing = (1.0, 2.0, 3.0)
    case = evaluate_case(pred, gt, pet, spacing, connectivity=connectivity, iou_threshold=threshold).case
    for k in (1, 2, 3):
        expected = _naive.detection(pred, gt, pet, k, threshold, connectivity)
        assert (case[f"tp_c{k}"], case[f"fp_c{k}"], case[f"fn_c{k}"]) == expected, f"criterion {k}"
    fpv, fnv = _naive.fp_fn_volume(pred, gt, spacing, connectivity)
    assert case["fp_volume_ml"] == pytest.approx(fpv) and case["fn_volume_ml"] == pytest.approx(fnv)
    assert case["gt_dmax_cm"] == pytest.approx(_naive.dmax_mm(gt, spacing) / 10, rel=1e-12)
    assert case["pred_dmax_cm"] == pytest.approx(_naive.dmax_mm(pred, spacing) / 10, rel=1e-12)


@st.composite
def degenerate_or_random_masks(draw):
    shape = tuple(draw(st.integers(1, 12)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "plane", "line", "diagonal", "one", "two", "sparse"]))
    mask = np.zeros(shape, bool)
    if kind == "random":
        mask = rng.random(shape) < draw(st.sampled_from([0.05, 0.3, 0.9]))
    elif kind == "plane":  # coplanar voxels: one slice along a random axis
        axis = int(rng.integers(0, 3))
        idx = [slice(None)] * 3
        idx[axis] = int(rng.integers(0, shape[axis]))
        mask[tuple(idx)] = rng.random(mask[tuple(idx)].shape) < 0.5
    elif kind == "line":  # collinear voxels along an axis
        axis = int(rng.integers(0, 3))
        idx = [int(rng.integers(0, s)) for s in shape]
        idx[axis] = slice(None)
        mask[tuple(idx)] = rng.random(shape[axis]) < 0.6
    elif kind == "diagonal":  # collinear but not axis-aligned
        n = min(shape)
        steps = np.arange(n)
        keep = rng.random(n) < 0.7
        mask[steps[keep], steps[keep], steps[keep]] = True
    elif kind in ("one", "two", "sparse"):
        count = {"one": 1, "two": 2, "sparse": 5}[kind]
        for _ in range(count):
            mask[tuple(int(rng.integers(0, s)) for s in shape)] = True
    return mask


@settings(max_examples=250, deadline=None)
@given(degenerate_or_random_masks(), st.tuples(*[st.floats(0.3, 5.0)] * 3))
def test_dmax_equals_brute_force(mask, spacing):
    expected = _naive.dmax_mm(mask, spacing)
    assert dmax_mm(np.argwhere(mask), spacing) == pytest.approx(expected, rel=1e-12, abs=0)
    # The same through evaluate_case, whose path prunes Fortran-sorted columns without a sort.
    case = evaluate_case(mask, mask, np.ones(mask.shape), spacing).case
    assert case["gt_dmax_cm"] == pytest.approx(expected / 10, rel=1e-12, abs=0)

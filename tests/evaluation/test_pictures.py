"""The MIP picture's lesion classes (hand-built volumes) and a readable PNG."""

from __future__ import annotations

import numpy as np

from lossbench.evaluation.pictures import lesion_classes, mip_png


def volumes():
    gt = np.zeros((12, 10, 14), np.uint8)
    pet = np.ones(gt.shape, np.float32)
    gt[1:3, 1:3, 1:3] = 1            # lesion A: its hottest voxel (1, 1, 1) is predicted -> TP
    pet[1, 1, 1] = 9.0
    gt[6:8, 6:8, 6:8] = 1            # lesion B: predicted only where it is not hottest -> FN
    pet[7, 7, 7] = 8.0
    pred = np.zeros_like(gt)
    pred[1:2, 1:2, 1:2] = 1          # touches A at its hottest voxel
    pred[6, 6, 6] = 1                # touches B, not at its hottest voxel
    pred[10:12, 0:2, 11:13] = 1      # far from any lesion -> FP
    return gt, pred, pet


def test_classes_follow_the_suvmax_criterion():
    gt, pred, pet = volumes()
    cls = lesion_classes(gt, pred, pet)
    assert cls["TP"].sum() == 8 and cls["TP"][1:3, 1:3, 1:3].all()
    assert cls["FN"].sum() == 8 and cls["FN"][6:8, 6:8, 6:8].all()
    assert cls["FP"].sum() == 8 and cls["FP"][10:12, 0:2, 11:13].all()
    assert cls["pred"].sum() == 2  # the two predicted pieces that touch a lesion


def test_png_is_written():
    gt, pred, pet = volumes()
    png = mip_png(pet, gt, pred, np.diag([4.0, 4.0, 4.0, 1.0]), title="case")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

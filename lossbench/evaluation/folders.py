"""Evaluate a folder of predictions against a folder of ground truths and PET images."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from lossbench.evaluation.case import CASE_COLUMNS, LESION_COLUMNS, evaluate_case
from lossbench.evaluation.io import check_geometry, find_cases, read_image
from lossbench.evaluation.strata import stratify

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["evaluate_folders"]


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    pet_dir: str | os.PathLike[str],
    *,
    criterion: int = 3,
    iou_threshold: float = 0.5,
    connectivity: int = 18,
    strata: str = "fixed",
    empty_dice: float = math.nan,
    affine_tol: float = 1e-3,
    progress: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every case of ``gt_dir`` (see :mod:`lossbench.evaluation.io` for the file matching).

    Every case is checked (files present, same shape, affines within ``affine_tol``) and evaluated with
    :func:`~lossbench.evaluation.case.evaluate_case` using the GT header's spacing; the per-case table
    then gets its ``stratum_*`` columns from :func:`~lossbench.evaluation.strata.stratify` with
    ``strata`` (``"fixed"`` or ``"quantile"``). ``progress`` is called with each case ID before it is
    evaluated.

    Returns:
        ``(cases, lesions)``: the per-case table (one row per case, sorted by case ID) and the per-lesion
        table (one row per GT lesion).

    Raises:
        LossbenchError: a folder or a case's file is missing, a geometry mismatch, bad mask or PET
        values, or a bad option; the message names the case.
    """
    import pandas as pd

    cases, _extra = find_cases(pred_dir, gt_dir, pet_dir)
    case_rows, lesion_rows = [], []
    for files in cases:
        if progress is not None:
            progress(files.case_id)
        gt = read_image(files.gt, kind="mask")
        pred = read_image(files.pred, kind="mask")
        pet = read_image(files.pet, kind="pet")
        check_geometry(files.case_id, {"ground truth": gt, "prediction": pred, "PET": pet}, affine_tol=affine_tol)
        result = evaluate_case(
            pred.array,
            gt.array,
            pet.array,
            gt.spacing,
            connectivity=connectivity,
            iou_threshold=iou_threshold,
            criterion=criterion,
            empty_dice=empty_dice,
            case_id=files.case_id,
        )
        case_rows.append(result.case)
        lesion_rows.extend(result.lesions)
    cases_df = stratify(pd.DataFrame(case_rows, columns=list(CASE_COLUMNS)), strata)
    lesions_df = pd.DataFrame(lesion_rows, columns=list(LESION_COLUMNS))
    return cases_df, lesions_df

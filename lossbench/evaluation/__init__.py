"""Evaluation of segmentations as in the study (PAPER.md §6–7): per case, per lesion, per stratum.

NumPy, SciPy, cc3d, pandas and nibabel only (no torch): the engine calls it after inference, the
``lossbench evaluate`` command on folders of NIfTI files.

- :func:`evaluate_case` — one case from arrays: Dice, detection under criteria 1–3, FP/FN volumes,
  the six patient-level biomarkers for GT and prediction, and a per-lesion table
  (:mod:`lossbench.evaluation.case` documents every formula and policy).
- :func:`evaluate_folders` — every case of a GT folder, matched to prediction and PET files
  (:mod:`lossbench.evaluation.io`), with strata columns (:mod:`lossbench.evaluation.strata`).
- :func:`stratify` — add the ``stratum_*`` columns to a per-case table (fixed or quantile edges).
- :func:`summarize` — pooled TP/FP/FN and rates, per-case mean/SD/median/IQR
  (:mod:`lossbench.evaluation.summary`).
- :func:`dmax_mm` — exact largest distance between foreground voxels (:mod:`lossbench.evaluation.geometry`).
"""

from __future__ import annotations

from lossbench.evaluation.case import CASE_COLUMNS, CRITERIA, LESION_COLUMNS, CaseEvaluation, evaluate_case
from lossbench.evaluation.folders import evaluate_folders
from lossbench.evaluation.geometry import dmax_mm
from lossbench.evaluation.strata import FIXED_EDGES, STRATA, lesion_size_class, stratify
from lossbench.evaluation.summary import summarize

__all__ = [
    "CASE_COLUMNS",
    "CRITERIA",
    "FIXED_EDGES",
    "LESION_COLUMNS",
    "STRATA",
    "CaseEvaluation",
    "dmax_mm",
    "evaluate_case",
    "evaluate_folders",
    "lesion_size_class",
    "stratify",
    "summarize",
]

"""Cohort summary of a per-case table: pooled detection counts and per-case statistics.

The study does not say whether its F1 and precision were pooled over the test set or averaged per
patient (PAPER.md §6.2, §11 item 6), so both are given:

- ``pooled``: for counts (``tp``, ``fp``, ``fn`` and their ``_c1/_c2/_c3`` forms) the sum over cases;
  for rates the rate of the pooled counts: sensitivity = ΣTP / (ΣTP + ΣFN), precision =
  ΣTP / (ΣTP + ΣFP), F1 = 2ΣTP / (2ΣTP + ΣFP + ΣFN) (NaN when the denominator is 0); for the FP / FN
  volumes the total in mL; for Dice the global Dice 2 Σ|P ∩ G| / (Σ|P| + Σ|G|) over all cases
  (needs the ``overlap_ml``, ``gt_tmtv_ml`` and ``pred_tmtv_ml`` columns; NaN without them).
- ``mean``, ``sd`` (sample, ddof = 1), ``median``, ``q1``, ``q3`` of the per-case values, NaN values
  (e.g. sensitivity of a case without lesions, Dice of two empty masks) left out; ``n`` counts the
  cases that entered them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SUMMARY_COLUMNS", "summarize"]

SUMMARY_COLUMNS = ("pooled", "mean", "sd", "median", "q1", "q3", "n")

_SUFFIXES = ("", "_c1", "_c2", "_c3")


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def summarize(cases: pd.DataFrame) -> pd.DataFrame:
    """Summary table of a per-case table: one row per metric, columns :data:`SUMMARY_COLUMNS`.

    Metrics (rows), when their column is present: ``dice``, then for each of the headline criterion
    and criteria 1–3 ``tp, fp, fn, sensitivity, precision, f1`` (suffixed ``_c1`` ... for the
    criteria), then ``fp_volume_ml`` and ``fn_volume_ml``.
    """
    import pandas as pd

    metrics: list[str] = ["dice"]
    for sfx in _SUFFIXES:
        metrics += [f"{name}{sfx}" for name in ("tp", "fp", "fn", "sensitivity", "precision", "f1")]
    metrics += ["fp_volume_ml", "fn_volume_ml"]
    metrics = [m for m in metrics if m in cases.columns]

    rows = {}
    for metric in metrics:
        vals = pd.to_numeric(cases[metric], errors="coerce").to_numpy(dtype=np.float64)
        finite = vals[~np.isnan(vals)]
        n = int(finite.size)
        stats = {
            "pooled": math.nan,
            "mean": float(finite.mean()) if n else math.nan,
            "sd": float(finite.std(ddof=1)) if n > 1 else math.nan,
            "median": float(np.median(finite)) if n else math.nan,
            "q1": float(np.quantile(finite, 0.25)) if n else math.nan,
            "q3": float(np.quantile(finite, 0.75)) if n else math.nan,
            "n": n,
        }
        rows[metric] = stats

    for sfx in _SUFFIXES:
        cols = [f"tp{sfx}", f"fp{sfx}", f"fn{sfx}"]
        if not all(c in cases.columns for c in cols):
            continue
        tp, fp, fn = (float(pd.to_numeric(cases[c]).sum()) for c in cols)
        rows[f"tp{sfx}"]["pooled"] = tp
        rows[f"fp{sfx}"]["pooled"] = fp
        rows[f"fn{sfx}"]["pooled"] = fn
        for name, value in (
            ("sensitivity", _ratio(tp, tp + fn)),
            ("precision", _ratio(tp, tp + fp)),
            ("f1", _ratio(2 * tp, 2 * tp + fp + fn)),
        ):
            if f"{name}{sfx}" in rows:
                rows[f"{name}{sfx}"]["pooled"] = value
    if "dice" in rows and all(c in cases.columns for c in ("overlap_ml", "gt_tmtv_ml", "pred_tmtv_ml")):
        # pooled (global) Dice: every test voxel counted once, so a tiny lesion's case weighs what it holds
        overlap = float(pd.to_numeric(cases["overlap_ml"]).sum())
        total = float(pd.to_numeric(cases["gt_tmtv_ml"]).sum() + pd.to_numeric(cases["pred_tmtv_ml"]).sum())
        rows["dice"]["pooled"] = _ratio(2.0 * overlap, total)
    for vol in ("fp_volume_ml", "fn_volume_ml"):
        if vol in rows:
            rows[vol]["pooled"] = float(pd.to_numeric(cases[vol]).sum())

    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    table.index.name = "metric"
    return table.astype({"n": int}) if len(table) else table

"""Synthetic per-case tables shaped like the engine's ``evaluation/cases.csv``, and MLflow runs of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench.evaluation import CASE_COLUMNS, stratify


def ground_truth(n_cases: int, seed: int = 0) -> pd.DataFrame:
    """GT columns of ``n_cases`` test cases spread over every fixed stratum."""
    rng = np.random.default_rng(seed)
    count = rng.choice([1, 2, 3, 4, 7, 9], size=n_cases)
    tmtv = rng.gamma(2.0, 6.0, size=n_cases) * count / 2 + 0.5
    suvmax = rng.uniform(5.0, 40.0, size=n_cases)
    return pd.DataFrame({
        "case_id": [f"psma_{i:03d}" for i in range(n_cases)],
        "gt_suvmax": suvmax,
        "gt_suvmean": suvmax / rng.uniform(2.0, 3.0, size=n_cases),
        "gt_tmtv_ml": tmtv,
        "gt_tla": tmtv * suvmax / 2.5,
        "gt_lesion_count": count,
        "gt_dmax_cm": np.where(count == 1, rng.uniform(0.5, 3.0, n_cases), rng.uniform(3.0, 40.0, n_cases)),
    })


def cases_table(gt: pd.DataFrame, *, dice_shift: float = 0.0, fp_rate: float = 1.0, bias: float = 0.0,
                noise: float = 0.1, seed: int = 0, case_effect: np.ndarray | None = None) -> pd.DataFrame:
    """One run's per-case table: every column of CASE_COLUMNS plus the strata."""
    rng = np.random.default_rng(seed)
    n = len(gt)
    base = case_effect if case_effect is not None else np.zeros(n)
    dice = np.clip(0.65 + base + dice_shift + rng.normal(0.0, noise, n), 0.0, 1.0)
    count = gt["gt_lesion_count"].to_numpy()
    tp = np.minimum(count, rng.binomial(count, np.clip(dice + 0.2, 0, 1)))
    fn = count - tp
    fp = rng.poisson(fp_rate, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        prec = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    rows = {"case_id": gt["case_id"], "criterion": 3, "iou_threshold": 0.5, "connectivity": 18,
            "voxel_volume_ml": 0.064, "dice": dice}
    rates = {"tp": tp, "fp": fp, "fn": fn, "sensitivity": sens, "precision": prec, "f1": f1}
    for name, values in rates.items():
        rows[name] = values
        for k in (1, 2, 3):
            rows[f"{name}_c{k}"] = values
    rows["fp_volume_ml"] = fp * rng.gamma(2.0, 0.5, n)
    rows["fn_volume_ml"] = fn * rng.gamma(2.0, 0.5, n)
    table = pd.DataFrame(rows)
    for name in ("suvmax", "suvmean", "tmtv_ml", "tla", "dmax_cm"):
        g = gt[f"gt_{name}"].to_numpy()
        table[f"gt_{name}"] = g
        table[f"pred_{name}"] = np.maximum(g * (1.0 + bias + rng.normal(0.0, 0.08, n)), 0.0)
    table["gt_lesion_count"] = count
    table["pred_lesion_count"] = np.maximum(count + rng.integers(-1, 2, n), 0)
    table["overlap_ml"] = dice * (table["gt_tmtv_ml"] + table["pred_tmtv_ml"]) / 2  # consistent with the Dice
    table = table[list(CASE_COLUMNS)]
    return stratify(table)


def log_runs(home: Path, experiment: str, specs: Sequence[Mapping], *, parent_of: Mapping[int, str] | None = None,
             tmp: Path) -> list[str]:
    """Log one FINISHED cell run per spec (loss, network, fold, seed, table[, status, preset, params]) like the engine."""
    from lossbench.tracking import CELL_TAG, KIND_TAG, Tracker

    tracker = Tracker(None, experiment)
    ids = []
    for i, spec in enumerate(specs):
        tags = {CELL_TAG: f"cell-{spec['loss']}-{spec['network']}-{spec['fold']}-{spec['seed']}-{i}",
                KIND_TAG: "cell", "lossbench.loss": spec["loss"], "lossbench.network": spec["network"],
                "lossbench.fold": str(spec["fold"]), "lossbench.seed": str(spec["seed"]),
                "lossbench.preset": spec.get("preset", "cpu")}
        name = f"{spec['loss']}-{spec['network']}-fold{spec['fold']}-seed{spec['seed']}"
        run_id = tracker.start_run(name, tags, parent_run_id=(parent_of or {}).get(i))
        if spec.get("params"):
            tracker.log_params(run_id, spec["params"])
        if spec.get("table") is not None:
            folder = tmp / f"run{i}" / "evaluation"
            folder.mkdir(parents=True)
            table = spec["table"].copy()
            table.insert(0, "run_id", run_id)
            table.to_csv(folder / "cases.csv", index=False)
            tracker.log_artifacts(run_id, [folder / "cases.csv"], "evaluation")
        end = {"FINISHED": tracker.finish, "KILLED": tracker.kill,
               "FAILED": lambda rid: tracker.fail(rid, "planted failure")}
        end[spec.get("status", "FINISHED")](run_id)
        ids.append(run_id)
    return ids


def matrix_parent(home: Path, experiment: str) -> str:
    from lossbench.tracking import KIND_TAG, Tracker

    tracker = Tracker(None, experiment)
    run_id = tracker.start_run("matrix", {KIND_TAG: "matrix"})
    tracker.finish(run_id)
    return run_id

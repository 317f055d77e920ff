"""Synthetic per-case tables shaped like the engine's ``evaluation/cases.csv``, and MLflow runs of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench.compare.simulate import case_table
from lossbench.evaluation import stratify


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
    table = case_table(gt["case_id"].tolist(), dice, {k: gt[f"gt_{k}"].to_numpy() for k in
                                                      ("suvmax", "suvmean", "tmtv_ml", "tla", "dmax_cm")},
                       count, rng, fp_rate=fp_rate, bias=bias)
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

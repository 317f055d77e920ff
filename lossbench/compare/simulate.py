"""Simulated comparisons with planted truths, to measure the error rates of ``lossbench compare``.

No training, no MLflow: :func:`dice_tables` draws the per-run × per-case Dice of a few losses from

    dice[l, r, c] = clip(0.70 + case_c + effect[l, c] + run[l, r] + inter[l, c] + noise[l, r, c], 0, 1)

with case_c ~ N(0, case_sd²) shared by every loss and run (cases differ a lot), run[l, r] ~
N(0, run_sd²) a training-run offset (seed-to-seed variance), inter[l, c] ~ N(0, tau²) a case × loss
interaction (the loss suits some patients better, with mean 0 over patients) and noise[l, r, c] ~
N(0, noise_sd²). ``effect`` plants a true difference: ``shift`` on all cases of one loss, or
``stratum_shift`` on the cases of one stratum level. Runs are (fold, seed); run r of every loss has
the same fold and seed, as in a matrix.

:func:`evaluate` applies the primary test (runs and cases random) and the old default (per-case
Wilcoxon on the seed-averaged values) to the confirmatory family (each loss against the baseline,
all cases) and to one stratum family (every level × candidate), with Holm in each.
:func:`case_frame` turns the tables into a per-case DataFrame shaped like ``load_cases`` output,
for timing the whole ``compare_cases``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lossbench.compare.stats import family_correct, twoway_pair, wilcoxon_pair

__all__ = ["Scenario", "case_frame", "dice_tables", "evaluate", "stratum_labels"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    run_sd: float = 0.0
    tau: float = 0.0
    shift: float = 0.0  # on all cases of the first candidate
    stratum_shift: float = 0.0  # on the cases of the small stratum level, first candidate
    null: bool = True


def stratum_labels(n_cases: int, small: int = 14) -> np.ndarray:
    """Three levels of a stratum: ``>5`` (the first ``small`` cases), ``2-5`` and ``1`` (the rest, halved)."""
    labels = np.empty(n_cases, dtype=object)
    labels[:small] = ">5"
    rest = n_cases - small
    labels[small: small + rest // 2] = "2-5"
    labels[small + rest // 2:] = "1"
    return labels


def dice_tables(scn: Scenario, rng: np.random.Generator, *, losses: int = 3, runs: int = 6, cases: int = 40,
                case_sd: float = 0.10, noise_sd: float = 0.05, small: int = 14) -> np.ndarray:
    """losses × runs × cases Dice; loss 0 is the baseline, loss 1 carries any planted effect."""
    case = rng.normal(0.0, case_sd, cases)
    effect = np.zeros((losses, cases))
    effect[1] += scn.shift
    effect[1, :small] += scn.stratum_shift
    run = rng.normal(0.0, scn.run_sd, (losses, runs, 1)) if scn.run_sd else 0.0
    inter = rng.normal(0.0, scn.tau, (losses, 1, cases)) if scn.tau else 0.0
    noise = rng.normal(0.0, noise_sd, (losses, runs, cases))
    return np.clip(0.70 + case[None, None, :] + effect[:, None, :] + run + inter + noise, 0.0, 1.0)


def evaluate(y: np.ndarray, labels: np.ndarray, *, alpha: float = 0.05) -> dict[str, dict[str, np.ndarray]]:
    """Rejections of both analyses in the confirmatory and the stratum family.

    Returns {"primary" | "wilcoxon": {"all": reject per candidate, "stratum": reject per (level, candidate)}}.
    """
    levels = list(dict.fromkeys(labels))
    out: dict[str, dict[str, np.ndarray]] = {}
    for analysis in ("primary", "wilcoxon"):
        fams = {}
        for fam, parts in (("all", [np.arange(y.shape[2])]), ("stratum", [np.nonzero(labels == v)[0] for v in levels])):
            p, mp = [], []
            for cols in parts:
                for cand in range(1, y.shape[0]):
                    ya, yb = y[cand][:, cols], y[0][:, cols]
                    if analysis == "primary":
                        res = twoway_pair(ya, yb, paired=True, alpha=alpha)
                    else:
                        res = wilcoxon_pair(ya.mean(axis=0), yb.mean(axis=0), alpha=alpha)
                    p.append(res["p"])
                    mp.append(res["min_p"])
            _, reject, _, _ = family_correct(np.array(p), np.array(mp), method="holm", alpha=alpha)
            fams[fam] = reject
        out[analysis] = fams
    return out


def case_table(case_ids: Sequence[str], dice: np.ndarray, gt: dict[str, np.ndarray], count: np.ndarray,
               rng: np.random.Generator, *, fp_rate: float = 1.0, bias: float = 0.0):
    """One run's per-case table (every column of :data:`lossbench.evaluation.CASE_COLUMNS`) that goes
    with its per-case ``dice``: detections drawn around the Dice and the GT ``count``, FP/FN volumes,
    predicted biomarkers around the GT ``gt`` (suvmax, suvmean, tmtv_ml, tla, dmax_cm) with a relative
    ``bias``, and the overlap that gives that Dice."""
    import pandas as pd

    from lossbench.evaluation import CASE_COLUMNS

    n = len(case_ids)
    tp = np.minimum(count, rng.binomial(count, np.clip(dice + 0.2, 0, 1)))
    fn = count - tp
    fp = rng.poisson(fp_rate, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {"tp": tp, "fp": fp, "fn": fn, "sensitivity": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
                 "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
                 "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)}
    rows = {"case_id": list(case_ids), "criterion": 3, "iou_threshold": 0.5, "connectivity": 18,
            "voxel_volume_ml": 0.064, "dice": dice}
    for name, values in rates.items():
        rows[name] = values
        for k in (1, 2, 3):
            rows[f"{name}_c{k}"] = values
    rows["fp_volume_ml"] = fp * rng.gamma(2.0, 0.5, n)
    rows["fn_volume_ml"] = fn * rng.gamma(2.0, 0.5, n)
    table = pd.DataFrame(rows)
    for name in ("suvmax", "suvmean", "tmtv_ml", "tla", "dmax_cm"):
        g = np.asarray(gt[name])
        table[f"gt_{name}"] = g
        table[f"pred_{name}"] = np.maximum(g * (1.0 + bias + rng.normal(0.0, 0.08, n)), 0.0)
    table["gt_lesion_count"] = count
    table["pred_lesion_count"] = np.maximum(count + rng.integers(-1, 2, n), 0)
    table["overlap_ml"] = dice * (table["gt_tmtv_ml"] + table["pred_tmtv_ml"]) / 2  # consistent with the Dice
    return table[list(CASE_COLUMNS)]


def case_frame(y: np.ndarray, *, networks: Sequence[str] = ("attunet",), folds: int = 2, seed: int = 0,
               loss_names: Sequence[str] = ("l1dfl", "dl", "dfl")):
    """A per-case table (run × case rows, every column of ``evaluation/cases.csv``) around the Dice of ``y``.

    ``y``: losses × runs × cases (runs = folds × seeds). GT columns spread the cases over every fixed
    stratum; detection counts and biomarkers are drawn to go with the Dice.
    """
    import pandas as pd

    from lossbench.evaluation import stratify

    rng = np.random.default_rng(seed)
    n_loss, n_runs, n = y.shape
    count = rng.choice([1, 2, 3, 4, 7, 9], size=n)
    tmtv = rng.gamma(2.0, 6.0, size=n) * count / 2 + 0.5
    suvmax = rng.uniform(5.0, 40.0, size=n)
    gt = {"suvmax": suvmax, "suvmean": suvmax / rng.uniform(2.0, 3.0, n), "tmtv_ml": tmtv, "tla": tmtv * suvmax / 2.5,
          "dmax_cm": np.where(count == 1, rng.uniform(0.5, 3.0, n), rng.uniform(3.0, 40.0, n))}
    tables = []
    for network in networks:
        for li in range(n_loss):
            for r in range(n_runs):
                table = case_table([f"case_{i:03d}" for i in range(n)], y[li, r], gt, count, rng)
                table = stratify(table)
                fold, s = r % folds, r // folds
                table.insert(0, "seed", s)
                table.insert(0, "fold", fold)
                table.insert(0, "network", network)
                table.insert(0, "loss", loss_names[li])
                table.insert(0, "run_id", f"{network}-{loss_names[li]}-f{fold}-s{s}")
                tables.append(table)
    return pd.concat(tables, ignore_index=True)

"""Calibration of ``lossbench compare``: family-wise error under nulls, power under planted effects.

Simulated comparisons, no training (``lossbench.compare.simulate``): 3 losses × 2 folds × 3 seeds
(6 runs per loss, run i of every loss sharing fold and seed) × 40 cases; a 14-case stratum level.
Scenarios: (a) no extra variance; (b) a case × loss interaction τ = 0.03, 0.06; (c) run offsets
SD 0.01, 0.02; (d) planted effects: +0.05 Dice in the 14-case level, +0.015 and +0.03 on all cases
(of one candidate). For each, the share of simulations in which the confirmatory family (each of the
2 candidates against the baseline, all cases, Holm) and the count-stratum family (3 levels × 2
candidates, Holm) reject anything (FWER, nulls) or reject the planted comparison (power), for the
new default primary test (runs and cases random) and the old default (per-case Wilcoxon on the
seed-averaged values), side by side, with the Monte-Carlo standard error.

Then ``compare_cases`` + ``write_report`` on a paper-sized table: 2 networks × 3 losses × 5 folds ×
3 seeds = 90 runs × 76 cases (MLflow reading not included).

    python benchmarks/stats_calibration.py --sims 1000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from lossbench.compare.simulate import (
    Scenario,
    case_frame,
    dice_tables,
    evaluate,
    stratum_labels,
)

SCENARIOS = [
    Scenario("(a) no extra variance"),
    Scenario("(b) case × loss τ = 0.03", tau=0.03),
    Scenario("(b) case × loss τ = 0.06", tau=0.06),
    Scenario("(c) run offsets SD 0.01", run_sd=0.01),
    Scenario("(c) run offsets SD 0.02", run_sd=0.02),
    Scenario("(d) +0.05 in the 14-case level", stratum_shift=0.05, null=False),
    Scenario("(d) +0.015 on all cases", shift=0.015, null=False),
    Scenario("(d) +0.03 on all cases", shift=0.03, null=False),
]


def calibrate(sims: int, seed: int) -> list[tuple[str, str, float, float, float, float]]:
    labels = stratum_labels(40)
    out = []
    for k, scn in enumerate(SCENARIOS):
        rng = np.random.default_rng([seed, k])
        hits = {(a, f): 0 for a in ("primary", "wilcoxon") for f in ("all", "stratum")}
        for _ in range(sims):
            res = evaluate(dice_tables(scn, rng), labels)
            for (a, f) in hits:
                rej = res[a][f]
                if scn.null:
                    hits[(a, f)] += bool(rej.any())
                elif f == "all":
                    hits[(a, f)] += bool(rej[0])  # candidate 1 vs baseline (the planted one)
                else:
                    hits[(a, f)] += bool(rej[0])  # level ">5" (first), candidate 1
        for f in ("all", "stratum"):
            new, old = hits[("primary", f)] / sims, hits[("wilcoxon", f)] / sims
            out.append((scn.name, "FWER" if scn.null else "power", f, new, old, sims))
    return out


def paper_sized_timing(seed: int) -> tuple[float, float, int]:
    import pandas as pd

    from lossbench.compare.analysis import compare_cases
    from lossbench.compare.report import write_report

    rng = np.random.default_rng(seed)
    parts = []
    for net in ("attunet", "segresnet"):
        y = dice_tables(Scenario("paper", run_sd=0.01, tau=0.03, shift=0.02, null=False), rng, runs=15, cases=76)
        parts.append(case_frame(y, networks=(net,), folds=5, seed=seed))  # same GT in both networks
    cases = pd.concat(parts, ignore_index=True)
    t0 = time.perf_counter()
    comp = compare_cases(cases, primary="dice")
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "r"
        folder.mkdir()
        write_report(comp, folder, {"experiment": "sim", "tracking_uri": "sqlite:///x/mlflow.db", "selection": "sim",
                                    "comparison_run_id": "-", "created": "-", "version": "-"})
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(comp.tests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=500, help="simulations per scenario")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.sims} simulations "
          "per scenario; 3 losses × 6 runs × 40 cases; α = 0.05, Holm per family")
    t = time.perf_counter()
    rows = calibrate(args.sims, args.seed)
    print("\n| scenario | rate | family | new default: two-way (runs, cases random) | old: per-case Wilcoxon, "
          "seed-averaged |")
    print("|---|---|---|---|---|")
    for name, kind, fam, new, old, sims in rows:
        se = lambda p: math.sqrt(max(p * (1 - p), 0.05 * 0.95 if kind == "FWER" else 0.0) / sims)
        family = "confirmatory (2 tests)" if fam == "all" else "count stratum (6 tests)"
        print(f"| {name} | {kind} | {family} | {new:.3f} ± {se(new):.3f} | {old:.3f} ± {se(old):.3f} |")
    print(f"\n(± one Monte-Carlo standard error; calibration took {time.perf_counter() - t:.1f} s)")
    if not args.no_timing:
        analysis, report, n = paper_sized_timing(args.seed)
        print(f"\npaper-sized compare (2 networks × 3 losses × 5 folds × 3 seeds = 90 runs × 76 cases, 8 metrics): "
              f"compare_cases {analysis:.1f} s, write_report {report:.1f} s, total {analysis + report:.1f} s, "
              f"{n} test rows")


if __name__ == "__main__":
    main()

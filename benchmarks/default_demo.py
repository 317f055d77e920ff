"""The README's first command, as a new user runs it: wall time and what the run learned.

    python benchmarks/default_demo.py                      # `lossbench run --loss l1dfl --net attunet`
    python benchmarks/default_demo.py -- --epochs 60 -S num_samples=2   # the same with extra options (a lever)
    python benchmarks/default_demo.py --keep-cohort DIR    # reuse one generated cohort across levers

Each run gets a fresh ``LOSSBENCH_HOME`` (so the synthetic cohort is generated as on a new
machine, unless ``--keep-cohort`` points at a home whose ``cache/`` is copied in first). Printed:
wall and CPU seconds of the whole command (cohort generation included), test Dice (per-case mean
and pooled over all test voxels), pooled lesion F1 and sensitivity (SUVmax criterion), false-positive
lesions per test case, best validation Dice and the epoch it came from. Goals of issue 14: test Dice
>= 0.6 and pooled F1 >= 0.6 within 5 minutes on 2 CPU cores. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = {"test Dice (mean)": 0.6, "pooled F1": 0.6, "wall seconds": 300.0}


def lossbench() -> str:
    exe = shutil.which("lossbench") or str(Path(sys.executable).with_name("lossbench"))
    if not os.path.exists(exe):
        sys.exit("lossbench is not installed in this environment: pip install -e .")
    return exe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-cohort", type=Path, help="a LOSSBENCH_HOME whose cache/ (the cohort) is reused")
    parser.add_argument("extra", nargs="*", help="extra options for lossbench run (after --)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lossbench-demo-"))
    if args.keep_cohort and (args.keep_cohort / "cache").is_dir():
        shutil.copytree(args.keep_cohort / "cache", home / "cache")
    env = {**os.environ, "LOSSBENCH_HOME": str(home)}
    cmd = [lossbench(), "run", "--loss", "l1dfl", "--net", "attunet", *args.extra]
    print("$", " ".join(["lossbench", *cmd[1:]]), f"(LOSSBENCH_HOME={home})", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        sys.exit(f"the run failed with exit code {proc.returncode}")

    os.environ["LOSSBENCH_HOME"] = str(home)
    from lossbench.tracking import Tracker

    run = Tracker(None, "lossbench", create=False).runs_of(kind="cell")[0]
    m = run.metrics
    n_test = int(run.params.get("split.n_test", "0") or 0) or 1
    rows = [
        ("wall seconds", wall), ("CPU seconds", cpu),
        ("test Dice (mean)", m.get("test_dice_mean")), ("test Dice (pooled)", m.get("test_dice_pooled")),
        ("pooled F1", m.get("test_f1_pooled")), ("pooled sensitivity", m.get("test_sensitivity_pooled")),
        ("FP lesions per case", (m.get("test_fp_pooled") or 0.0) / n_test),
        ("best validation Dice", m.get("best_val_dice")), ("best epoch", m.get("best_epoch")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        goal = GOAL.get(key)
        mark = ""
        if goal is not None and value is not None:
            ok = value <= goal if key == "wall seconds" else value >= goal
            mark = f"   goal {'<=' if key == 'wall seconds' else '>='} {goal:g}: {'met' if ok else 'NOT met'}"
        shown = "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}{mark}")
    print(f"machine: {os.cpu_count()} CPUs; home kept at {home}")


if __name__ == "__main__":
    main()

"""Where a CPU training run spends its time, and what glibc's allocator settings change.

Runs the real ``lossbench run`` twice on the same cell, each in a fresh process and a fresh
``LOSSBENCH_HOME``:

1. baseline: glibc's default allocator settings (``LOSSBENCH_MALLOC=0``);
2. tuned: ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` at 16 GiB (lossbench's default).

For each it reads the timings the run logged to MLflow (``time_*_seconds``) and the child's
peak resident memory (``wait4``), and prints the share of training wall time in
forward/backward, data loading and logging (goal: data + logging < 20 %), plus the tuned/baseline
ratios of compute time and peak memory.

    python benchmarks/train_profile.py                       # CPU preset, default cohort, 2 epochs
    python benchmarks/train_profile.py --epochs 4 --net segresnet
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(args: argparse.Namespace, malloc: bool, home: Path) -> dict[str, float]:
    cmd = [str(Path(sys.executable).with_name("lossbench")), "run", "--loss", args.loss, "--net", args.net,
           "--epochs", str(args.epochs), "--preset", "cpu", "--experiment", "profile", "--device", "cpu"]
    if args.data:
        cmd += ["--data", args.data]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["LOSSBENCH_HOME"] = str(home)
    env["LOSSBENCH_MALLOC"] = "1" if malloc else "0"
    if args.cache:
        # share the generated default cohort between the two runs
        (home / "cache").parent.mkdir(parents=True, exist_ok=True)
        if not (home / "cache").exists():
            os.symlink(args.cache, home / "cache")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lossbench run failed: {proc.stderr.read().decode()[-2000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("profile")
    run = client.search_runs([exp.experiment_id])[0]
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("time_")}
    metrics["process_wall"] = wall
    metrics["peak_rss_mib"] = usage.ru_maxrss / 1024
    metrics["malloc_param"] = run.data.params.get("malloc", "?")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="l1dfl")
    parser.add_argument("--net", default="attunet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="", help="data folder (default: the synthetic default cohort)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lossbench-profile-"))
    args.cache = str(work / "shared-cache")
    os.makedirs(args.cache, exist_ok=True)
    try:
        results = {}
        for label, malloc in (("baseline (glibc defaults)", False), ("tuned (16 GiB thresholds)", True)):
            results[label] = run_once(args, malloc, work / label.split()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"cell: {args.loss} × {args.net}, CPU preset, {args.epochs} epochs; cpus {os.cpu_count()}")
    parts = ("compute", "data", "logging", "checkpoint", "validation")
    header = f"{'':28} | " + " | ".join(f"{p:>10}" for p in parts) + f" | {'train wall':>10} | {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for label, m in results.items():
        train_wall = sum(m[f"time_{p}_seconds"] for p in parts)
        print(f"{label:28} | " + " | ".join(f"{m[f'time_{p}_seconds']:9.1f}s" for p in parts)
              + f" | {train_wall:9.1f}s | {m['peak_rss_mib']:8.0f}")
    for label, m in results.items():
        loop = m["time_compute_seconds"] + m["time_data_seconds"] + m["time_logging_seconds"]
        share = (m["time_data_seconds"] + m["time_logging_seconds"]) / loop
        print(f"{label}: forward/backward {m['time_compute_seconds'] / loop:.0%} of the training loop, "
              f"data + logging {share:.0%} (goal < 20 %); malloc param logged: {m['malloc_param']}")
    base, tuned = results.values()
    print(f"tuned / baseline: compute time {tuned['time_compute_seconds'] / base['time_compute_seconds']:.2f}×, "
          f"validation {tuned['time_validation_seconds'] / base['time_validation_seconds']:.2f}×, "
          f"peak memory {tuned['peak_rss_mib'] / base['peak_rss_mib']:.2f}×")


if __name__ == "__main__":
    main()

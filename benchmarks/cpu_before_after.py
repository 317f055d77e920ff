"""Is the default CPU run slower than at an earlier commit? The same cell, both codes, interleaved.

    python benchmarks/cpu_before_after.py --baseline dfdbdb2            # 30 epochs, old,new,new,old
    python benchmarks/cpu_before_after.py --baseline HEAD~3 --epochs 6 --order old,new
    python benchmarks/cpu_before_after.py --baseline 63013cb -- -S amp=false -S affine_prob=0.5  # the same settings

The baseline's source is extracted with ``git archive`` into a temporary folder and run from there
(``PYTHONPATH``) with this environment's packages; "new" is this checkout. Every run is a fresh
process with a fresh ``LOSSBENCH_HOME``; each code's synthetic default cohort is generated once, by
an untimed one-epoch warm-up run of that code, and shared through ``cache/``. Each code runs its own
defaults: where a change altered the cpu preset or the default cohort (issue 14 did), the
comparison is of the two defaults; options after ``--`` go to both codes' runs, to compare the
loop under the same settings. The cell is ``lossbench run --loss l1dfl --net attunet
--epochs E -S val_every=E`` (one validation, at the end: the training loop's cost). Printed per
run: wall and CPU seconds (``wait4``), the run's logged ``time_compute_seconds`` and
``time_data_seconds``, the median ``epoch_seconds``; then new/old ratios of the means. Run it
alone on the machine: two cores are easily shared, and load is the largest source of difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extract(rev: str, dst: Path) -> Path:
    done = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True)
    if done.returncode != 0:
        sys.exit(f"cpu_before_after: no revision {rev!r} in {ROOT}: pass a commit, tag or branch to --baseline")
    archive = done.stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def run_once(code: Path, home: Path, cache: Path, epochs: int, extra: list[str]) -> dict[str, float]:
    home.mkdir(parents=True)
    os.symlink(cache, home / "cache")
    env = {**os.environ, "LOSSBENCH_HOME": str(home), "PYTHONPATH": f"{code}:{code / 'plugins'}"}
    cmd = [sys.executable, "-m", "lossbench", "run", "--loss", "l1dfl", "--net", "attunet", "--epochs", str(epochs),
           "-S", f"val_every={epochs}", "--experiment", "before-after", "--device", "cpu", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"cpu_before_after: the run of {code} failed: {proc.stderr.read().decode()[-2000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("before-after").experiment_id])[0]
    epochs_s = [m.value for m in client.get_metric_history(run.info.run_id, "epoch_seconds")]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "compute": run.data.metrics["time_compute_seconds"], "data": run.data.metrics["time_data_seconds"],
            "epoch": statistics.median(epochs_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit to compare with (any git revision)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--order", default="old,new,new,old", help="the runs, in order (old/new)")
    parser.add_argument("extra", nargs="*", help="options for both codes' lossbench run (after --)")
    args = parser.parse_args()
    order = args.order.split(",")
    if not order or set(order) - {"old", "new"}:
        sys.exit("cpu_before_after: --order takes old and new, comma-separated (e.g. old,new,new,old)")
    with tempfile.TemporaryDirectory(prefix="lossbench-before-after-") as tmp:
        work = Path(tmp)
        (work / "old").mkdir()
        codes = {"old": extract(args.baseline, work / "old"), "new": ROOT}
        cache = work / "cache"
        cache.mkdir()
        for which in ("old", "new"):  # each code's default cohort, generated untimed
            run_once(codes[which], work / f"home-warm-up-{which}", cache, 1, args.extra)
        results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for i, which in enumerate(order):
            figures = run_once(codes[which], work / f"home-{i}", cache, args.epochs, args.extra)
            results[which].append(figures)
            print(f"{i + 1}. {which}: wall {figures['wall']:.1f} s, CPU {figures['cpu']:.1f} s, compute "
                  f"{figures['compute']:.1f} s, data {figures['data']:.1f} s, epoch (median) {figures['epoch']:.2f} s",
                  flush=True)
    if results["old"] and results["new"]:
        for key in ("wall", "cpu", "compute", "data", "epoch"):
            ratio = statistics.mean(r[key] for r in results["new"]) / statistics.mean(r[key] for r in results["old"])
            print(f"new / old ({args.baseline}) {key}: {ratio:.3f}")


if __name__ == "__main__":
    main()

"""The real `lossbench run` pipeline at the ``paper`` preset on a GPU: where a step's time goes, and what a paper cell costs.

Issue 11's prepared GPU check. It generates a synthetic cohort at paper-like size (the whole-body
field of view, 224×160×448 voxels of 2 mm) with ``lossbench data synth``, then for each network runs

    lossbench run --preset paper --data COHORT --net NET --loss l1dfl --epochs E -S val_every=V --device cuda

as a subprocess in the script's own ``LOSSBENCH_HOME`` (one home for all runs, so the preprocessed
volumes are shared as in a matrix), samples the GPU's utilisation meanwhile (``nvidia-smi -lms 200``,
or pynvml), and reads back what the run logged to MLflow. Printed per network:

- the card (``torch.cuda.get_device_name()``; "CPU (smoke)" with ``--smoke``);
- step time: (``time_data_seconds`` + ``time_compute_seconds``) / ``steps``, and the same from the
  per-epoch ``epoch_seconds`` of the epochs after the first that did not validate (no warm-up, no
  validation: the steady step the paper's 60,000 steps are made of), which the projection uses;
- data-wait share: ``time_data_seconds`` / (``time_data_seconds`` + ``time_compute_seconds``);
- GPU busy while training: the mean utilisation over the stretches of steady training epochs, placed
  in time by the run's "epoch k/E" lines (each printed right after a validation) and the epochs'
  ``epoch_seconds``;
- validation seconds per case (``time_validation_seconds_per_case``), and the same over the
  validations after the first (the first also preprocesses the validation cases it reads first):
  each such epoch's ``epoch_seconds`` less a steady training epoch, which the projection uses;
- peak GPU memory (``peak_gpu_memory_mb``, torch's peak allocation in the training process);
- the projected wall time of a paper cell (1000 epochs of ceil(240 / batch) steps, validation of 60
  cases every 2 epochs; test inference left out) and of the paper matrix (90 cells) on 1 and 8 GPUs;
- the share of an AttUNet step at 128³ spent in L1DFL, measured in this process as
  ``benchmarks/gpu_paper_preset.py`` does (step time with l1dfl minus step time with a trivial loss,
  over the former; its ``step_times`` function);
- issue 11's goals, each met / NOT met: data wait ≤ 5 % of the step, GPU busy ≥ 90 % while
  training, validation ≤ 25 % of a cell, L1DFL ≤ 3 % of an AttUNet step at 128³.

    python benchmarks/gpu_pipeline.py                       # on the GPU machine: attunet, segresnet
    python benchmarks/gpu_pipeline.py --nproc 2             # also each cell under `lossbench run --nproc 2` (≥ 2 GPUs)
    python benchmarks/gpu_pipeline.py --cohort DIR --keep   # reuse a generated cohort; keep the home
    python benchmarks/gpu_pipeline.py -- -S workers=8       # extra `lossbench run` options (a lever)
    python benchmarks/gpu_pipeline.py --smoke               # the same code path on CPU, a tiny cohort (1-3 min)

Sized for at most 8 minutes on one H100/H200 (not yet timed on one): 16 cases (2 test; with fold 0
about 11 training cases, 3 steps of 4 an epoch, and 3 validation cases), 20 epochs, validation every
5, so 60 steps, 15 steady epochs and 4 validations per network; generating the cohort took about
7 s of CPU a case on the 2-core development machine. A short run counts the loader's first batch (worker start-up, the first
crops) in its data wait, which 60,000 paper steps would amortise: read the data-wait share as an
upper bound, or raise --epochs.

A figure a run cannot have (a GPU figure on CPU, a metric this lossbench does not log) prints "n/a".
A failed run ends the script with one line and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_demo import lossbench  # the installed CLI, or a one-line exit
from gpu_paper_preset import step_times  # the micro-benchmark's timed training step

#: The paper's cell and matrix (PAPER.md §4-5): what the projection multiplies the measured figures by.
PAPER = {"epochs": 1000, "train_cases": 240, "val_cases": 60, "val_every": 2, "cells": 90}
#: Issue 11's goals.
GOALS = {"data": 0.05, "busy": 0.90, "validation": 0.25, "loss": 0.03}
#: Settings of the two modes: the GPU check (whole-body field of view at 2 mm) and the CPU smoke run.
MODES = {
    "gpu": {"cases": 16, "test_fraction": 0.125, "shape": "224,160,448", "spacing": "2", "epochs": 20,
            "val_every": 5, "run_args": [], "share": {"patch": 128, "batch": 4, "iters": 20, "warmup": 5}},
    "smoke": {"cases": 6, "test_fraction": 0.2, "shape": "48,40,96", "spacing": "4", "epochs": 4,
              "val_every": 2, "run_args": ["--patch", "32", "--spacing", "4"],
              "share": {"patch": 32, "batch": 2, "iters": 5, "warmup": 2}},
}
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): train loss")


def fail(message: str) -> None:
    """One line on stderr and exit status 1."""
    sys.exit(f"gpu_pipeline: {message}")


# -- GPU utilisation, sampled beside the run ----------------------------------------------------
class GpuSampler:
    """Utilisation (%) and memory used (MiB) of the given GPUs every 200 ms, with monotonic times,
    from ``nvidia-smi -lms 200`` or, without it, pynvml; ``source`` says which (None: neither)."""

    def __init__(self, gpus: list[str]) -> None:
        self.gpus = gpus
        self.samples: list[tuple[float, float, float]] = []  # (time, utilisation %, memory MiB)
        self.source: str | None = None
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi:
            self._proc = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200",
                 "-i", ",".join(self.gpus)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
            self.source = "nvidia-smi"
        else:
            try:
                import pynvml
            except ImportError:
                return self
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByUUID(g) if g.startswith("GPU-")
                       else pynvml.nvmlDeviceGetHandleByIndex(int(g)) for g in self.gpus]
            self._thread = threading.Thread(target=self._poll_nvml, args=(pynvml, handles), daemon=True)
            self.source = "pynvml"
        self._thread.start()
        return self

    def _read_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.monotonic(), float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):  # "[N/A]" or a partial line
                continue

    def _poll_nvml(self, pynvml, handles) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for h in handles:
                self.samples.append((now, float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                                     pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20))
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def busy(self, windows: list[tuple[float, float]]) -> tuple[float | None, int]:
        """Mean utilisation (0-1) of the samples inside the windows, and their number."""
        inside = [u for t, u, _ in self.samples if any(a <= t <= b for a, b in windows)]
        return (sum(inside) / len(inside) / 100.0 if inside else None), len(inside)

    def max_memory(self) -> float | None:
        return max((m for _, _, m in self.samples), default=None)


# -- one cell ---------------------------------------------------------------------------------
def validation_epochs(epochs: int, val_every: int) -> list[int]:
    """The 1-based epochs after which the run validates (every ``val_every``-th and the last)."""
    return [k for k in range(1, epochs + 1) if k % val_every == 0 or k == epochs]


def run_cell(args, mode: dict, home: Path, cohort: Path, net: str, nproc: int, gpus: list[str]) -> dict:
    """Run one cell as the user would, sample the GPU meanwhile, and read back what it logged."""
    device = "cpu" if args.smoke else "cuda"
    cmd = [lossbench(), "run", "--preset", "paper", "--data", str(cohort), "--net", net, "--loss", args.loss,
           "--epochs", str(args.epochs), "-S", f"val_every={args.val_every}", "--device", device, "--force",
           "--json", *mode["run_args"], *(["--nproc", str(nproc)] if nproc > 1 else []), *args.extra]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    env.update(LOSSBENCH_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="200")
    log = home / f"run-{net}-nproc{nproc}.log"
    print("$", " ".join(["lossbench", *cmd[1:]]), flush=True)
    sampler = GpuSampler(gpus[:nproc]).start() if not args.smoke else GpuSampler([])
    epoch_seen: dict[int, float] = {}
    start = time.monotonic()
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.monotonic()
            err.write(line)
            found = EPOCH_LINE.search(line)
            if found:
                epoch_seen.setdefault(int(found.group(1)), now)
        rc = proc.wait()
        wall = time.monotonic() - start
        sampler.stop()
        out.seek(0)
        stdout = out.read()
    if rc != 0:
        lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        fail(f"lossbench run --net {net} (nproc {nproc}) failed with exit code {rc}: {last} (log: {log})")
    try:
        run_id = json.loads(stdout)["run_id"]
    except (ValueError, KeyError, TypeError):
        fail(f"lossbench run --net {net} printed no JSON summary with a run_id (log: {log})")

    os.environ["LOSSBENCH_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    from mlflow.tracking import MlflowClient

    from lossbench.tracking import Tracker

    tracker = Tracker(None, "lossbench", create=False)
    run = next((r for r in tracker.runs_of(kind="cell") if r.id == run_id), None)
    if run is None:
        fail(f"run {run_id} of lossbench run --net {net} is not in {tracker.uri}")
    m, p = run.metrics, run.params
    per_epoch = {h.step + 1: h.value for h in MlflowClient(tracking_uri=tracker.uri).get_metric_history(
        run_id, "epoch_seconds")}  # 1-based epoch -> seconds (training, plus validation where it validated)
    return {"net": net, "nproc": nproc, "wall": wall, "metrics": m, "params": p, "per_epoch": per_epoch,
            "epoch_seen": epoch_seen, "sampler": sampler, "log": log}


def figures(cell: dict, epochs: int, val_every: int, smoke: bool) -> dict:
    """The measured figures of one cell and the paper projection built on them (None: n/a)."""
    m, p, nproc = cell["metrics"], cell["params"], cell["nproc"]
    batch = int(float(p.get("config.batch", "4")))
    data, compute = m.get("time_data_seconds"), m.get("time_compute_seconds")
    steps = m.get("steps")
    steps_source = "logged"
    if steps is None and nproc == 1 and p.get("split.n_train"):
        # older runs: one process takes ceil(n_train / batch) steps an epoch
        steps, steps_source = float(epochs * math.ceil(int(p["split.n_train"]) / batch)), "from the split"
    f: dict = {"steps": steps, "steps_source": steps_source, "wall": cell["wall"],
               "workers": m.get("loader_workers")}
    f["step"] = (data + compute) / steps if None not in (data, compute) and steps else None
    f["data_share"] = data / (data + compute) if None not in (data, compute) and data + compute > 0 else None

    # the steady step: epochs after the first that did not validate, from their epoch_seconds
    validating = set(validation_epochs(epochs, val_every))
    steady = [k for k in range(2, epochs + 1) if k not in validating and k in cell["per_epoch"]]
    per_epoch_steps = steps / epochs if steps else None
    f["steady_step"] = (sum(cell["per_epoch"][k] for k in steady) / (len(steady) * per_epoch_steps)
                        if steady and per_epoch_steps else None)
    f["steady_epochs"] = len(steady)

    # GPU busy: the steady epochs that follow a validation's "epoch k/E" line, placed by epoch_seconds
    windows = []
    for k in sorted(validating):
        if k not in cell["epoch_seen"]:
            continue
        t, j = cell["epoch_seen"][k], k + 1
        while j <= epochs and j not in validating and j in cell["per_epoch"]:
            windows.append((t, t + cell["per_epoch"][j]))
            t += cell["per_epoch"][j]
            j += 1
    sampler = cell["sampler"]
    if smoke or sampler.source is None:
        f["busy"], f["busy_note"] = None, "no GPU" if smoke else "neither nvidia-smi nor pynvml"
    else:
        f["busy"], n = sampler.busy(windows)
        f["busy_note"] = f"{n} {sampler.source} samples in {len(windows)} training epochs"

    val_total = m.get("time_validation_seconds")
    f["val_case"] = m.get("time_validation_seconds_per_case")
    f["val_case_source"] = "logged"
    if f["val_case"] is None and val_total is not None and nproc == 1 and p.get("split.n_val"):
        f["val_case"] = val_total / (len(validating) * int(p["split.n_val"]))
        f["val_case_source"] = "from the split"
    # the steady validation: the validations after the first (which also preprocesses the cases it
    # is the first to read), each its epoch's epoch_seconds less a steady training epoch
    f["steady_val_case"], f["steady_vals"] = None, 0
    later = [k for k in sorted(validating)[1:] if k in cell["per_epoch"]]
    if later and steady and p.get("split.n_val"):
        train_epoch = sum(cell["per_epoch"][k] for k in steady) / len(steady)
        per_rank = math.ceil(int(p["split.n_val"]) / nproc)
        value = sum(cell["per_epoch"][k] - train_epoch for k in later) / (len(later) * per_rank)
        f["steady_val_case"], f["steady_vals"] = (value if value > 0 else None), len(later)
    f["peak_mb"], f["peak_source"] = m.get("peak_gpu_memory_mb"), "torch peak allocated"
    if f["peak_mb"] is None and not smoke and sampler.max_memory() is not None:
        f["peak_mb"], f["peak_source"] = sampler.max_memory(), "nvidia-smi memory.used, whole run"

    # the paper cell: 1000 epochs of ceil(ceil(240 / nproc) / batch) steps per process, and 500
    # validations of the 60 cases (each process validates ceil(60 / nproc) of them)
    step = f["steady_step"] if f["steady_step"] is not None else f["step"]
    f["step_used"] = "steady" if f["steady_step"] is not None else "all steps"
    spe = math.ceil(math.ceil(PAPER["train_cases"] / nproc) / batch)
    val_case = f["steady_val_case"] if f["steady_val_case"] is not None else f["val_case"]
    f["val_used"] = "steady" if f["steady_val_case"] is not None else "all validations"
    n_val = len(validation_epochs(PAPER["epochs"], PAPER["val_every"]))
    f["train_h"] = PAPER["epochs"] * spe * step / 3600 if step is not None else None
    f["val_h"] = (n_val * math.ceil(PAPER["val_cases"] / nproc) * val_case / 3600
                  if val_case is not None else None)
    f["cell_h"] = f["train_h"] + f["val_h"] if None not in (f["train_h"], f["val_h"]) else None
    f["val_share"] = f["val_h"] / f["cell_h"] if f["cell_h"] else None
    f["matrix_1"] = PAPER["cells"] * f["cell_h"] if f["cell_h"] is not None and nproc == 1 else None
    f["matrix_8"] = (math.ceil(PAPER["cells"] / (8 // nproc)) * f["cell_h"]
                     if f["cell_h"] is not None and nproc <= 8 else None)
    return f


# -- the loss's share of a step (gpu_paper_preset.py's method) ------------------------------------
def loss_share(loss_name: str, patch: int, batch: int, iters: int, warmup: int, device_name: str) -> dict:
    import statistics

    import torch

    from lossbench.registry import load_registry

    device = torch.device(device_name)
    torch.backends.cudnn.benchmark = True
    reg = load_registry()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 2, *(patch,) * 3), generator=gen).to(device)
    y = (torch.rand((batch, 1, *(patch,) * 3), generator=gen) < 0.02).long().to(device)
    loss = reg.build("loss", loss_name).to(device)
    component = reg.get("network", "attunet")
    component.check({}, patch=(patch,) * 3, spatial_dims=3, batch_size=batch)
    torch.manual_seed(0)
    net = component.build({}, in_channels=2, out_channels=2, spatial_dims=3).to(device)
    real = statistics.median(step_times(net, loss, x, y, iters, warmup, True, device))
    trivial = statistics.median(step_times(net, lambda logits, target: logits.mean(), x, y, iters, warmup, True,
                                           device))
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"share": max(real - trivial, 0.0) / real, "real": real, "trivial": trivial, "patch": patch,
            "batch": batch, "iters": iters}


# -- printing ---------------------------------------------------------------------------------
def hours(h: float | None) -> str:
    if h is None:
        return "n/a"
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def verdict(value: float | None, goal: float, at_most: bool) -> str:
    if value is None:
        return "n/a (not measured)"
    ok = value <= goal if at_most else value >= goal
    return f"{pct(value)} -> {'met' if ok else 'NOT met'}"


def print_table(device: str, cells: list[dict], figs: list[dict], share: dict, smoke: bool, args) -> None:
    heads = [f"{c['net']}" + (f" ×{c['nproc']}" if c["nproc"] > 1 else "") for c in cells]
    rows = [
        ("device", [device + (f" ×{c['nproc']}" if c["nproc"] > 1 else "") for c in cells]),
        ("run wall (s)", [num(f["wall"], ".1f") for f in figs]),
        ("loader workers", [num(f["workers"], ".0f") for f in figs]),
        ("steps", [num(f["steps"], ".0f") + ("" if f["steps_source"] == "logged" else " (from split)")
                   for f in figs]),
        ("step time (s)", [num(f["step"], ".3f") for f in figs]),
        ("steady step time (s)", [num(f["steady_step"], ".3f") + f" ({f['steady_epochs']} ep)" for f in figs]),
        ("data-wait share", [pct(f["data_share"]) for f in figs]),
        ("GPU busy while training", [pct(f["busy"]) + f" ({f['busy_note']})" for f in figs]),
        ("validation (s/case)", [num(f["val_case"], ".2f") + ("" if f["val_case_source"] == "logged"
                                                            else " (from split)") for f in figs]),
        ("steady validation (s/case)", [num(f["steady_val_case"], ".2f") + f" ({f['steady_vals']} val)"
                                        for f in figs]),
        ("peak GPU memory (MiB)", [num(f["peak_mb"], ".0f") + ("" if f["peak_mb"] is None or
                                                             f["peak_source"].startswith("torch")
                                                             else " (nvidia-smi)") for f in figs]),
        ("projected paper cell", [hours(f["cell_h"]) for f in figs]),
        ("  of it training", [hours(f["train_h"]) + f" ({f['step_used']})" for f in figs]),
        ("  of it validation", [hours(f["val_h"]) + f" ({pct(f['val_share'])}, {f['val_used']})" for f in figs]),
        ("paper matrix, 1 GPU", [hours(f["matrix_1"]) for f in figs]),
        ("paper matrix, 8 GPUs", [hours(f["matrix_8"]) for f in figs]),
    ]
    key_w = max(len(k) for k, _ in rows)
    col_w = [max(len(h), *(len(r[1][i]) for r in rows)) for i, h in enumerate(heads)]
    print()
    print(f"{'':<{key_w}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, col_w)))
    for key, values in rows:
        print(f"{key:<{key_w}}  " + "  ".join(f"{v:<{w}}" for v, w in zip(values, col_w)))
    print("\nsteady: epochs after the first without validation (step), validations after the first (s/case), "
          "both from the run's epoch_seconds")
    print(f"projection: {PAPER['epochs']} epochs × ceil({PAPER['train_cases']} cases / nproc / batch) steps at the "
          f"steady step time, validation of {PAPER['val_cases']} cases every {PAPER['val_every']} epochs at the "
          f"steady s/case (each: over all steps / validations where there is no steady figure); test inference "
          f"not included; matrix: {PAPER['cells']} cells, one cell per GPU (per nproc GPUs) at a time")
    amp = "AMP" if not smoke else "CPU, no AMP"
    print(f"{args.loss} share of an AttUNet step at {share['patch']}³, batch {share['batch']}, {amp}: "
          f"{pct(share['share'])} (step {share['real'] * 1e3:.1f} ms with {args.loss}, "
          f"{share['trivial'] * 1e3:.1f} ms with a trivial loss; median of {share['iters']})")
    print("\nissue 11's goals" + (" (a smoke run on CPU: these verdicts say nothing about a GPU)" if smoke else ""))
    for head, f in zip(heads, figs):
        print(f"  {head}: data wait <= 5 % of the step: {verdict(f['data_share'], GOALS['data'], True)}")
        print(f"  {head}: GPU busy >= 90 % while training: {verdict(f['busy'], GOALS['busy'], False)}")
        print(f"  {head}: validation <= 25 % of a paper cell: {verdict(f['val_share'], GOALS['validation'], True)}")
    where = "" if share["patch"] == 128 else f" (measured at {share['patch']}³, batch {share['batch']})"
    print(f"  {args.loss} <= 3 % of an AttUNet step at 128³{where}: {verdict(share['share'], GOALS['loss'], True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the same code path on CPU with a tiny cohort")
    parser.add_argument("--nets", default="attunet,segresnet")
    parser.add_argument("--loss", default="l1dfl")
    parser.add_argument("--nproc", type=int, default=1,
                        help="also run each cell with `lossbench run --nproc N` (needs N GPUs)")
    parser.add_argument("--cases", type=int, help="cohort size (GPU: 16, smoke: 6)")
    parser.add_argument("--epochs", type=int, help="epochs per cell (GPU: 20, smoke: 4)")
    parser.add_argument("--val-every", type=int, help="validate every N epochs (GPU: 5, smoke: 2)")
    parser.add_argument("--cohort", type=Path, help="a cohort folder to reuse (generated there if empty)")
    parser.add_argument("--home", type=Path, help="LOSSBENCH_HOME for the runs (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the home (and a generated cohort) afterwards")
    parser.add_argument("extra", nargs="*", help="extra options for lossbench run (after --)")
    args = parser.parse_args()
    mode = MODES["smoke" if args.smoke else "gpu"]
    args.epochs = args.epochs or mode["epochs"]
    args.val_every = args.val_every or mode["val_every"]
    cases = args.cases or mode["cases"]
    started = time.monotonic()

    import torch

    if not args.smoke and not torch.cuda.is_available():
        fail("no CUDA device: run with --smoke on CPU")
    device = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    gpus = [g.strip() for g in visible.split(",") if g.strip()] if visible else [
        str(i) for i in range(torch.cuda.device_count())]
    nprocs = [1]
    if args.nproc > 1:
        help_text = subprocess.run([lossbench(), "run", "--help"], check=False, capture_output=True,
                                   text=True).stdout
        if args.smoke or torch.cuda.device_count() < args.nproc:
            print(f"--nproc {args.nproc} skipped: {torch.cuda.device_count()} CUDA device(s) here")
        elif "--nproc" not in help_text:
            print(f"--nproc {args.nproc} skipped: this lossbench run has no --nproc option")
        else:
            nprocs.append(args.nproc)

    made_home = args.home is None
    home = args.home or Path(tempfile.mkdtemp(prefix="lossbench-gpu-pipeline-"))
    home.mkdir(parents=True, exist_ok=True)
    cohort = args.cohort or home / "cohort"
    done = False
    try:
        print(f"device: {device}; torch {torch.__version__}; {os.cpu_count()} CPUs; LOSSBENCH_HOME={home}")
        if cohort.is_dir() and any(cohort.iterdir()):
            print(f"cohort: reusing {cohort}")
        else:
            cmd = [lossbench(), "data", "synth", "--out", str(cohort), "--cases", str(cases), "--shape", mode["shape"],
                   "--spacing", mode["spacing"], "--test-fraction", str(mode["test_fraction"])]
            print("$", " ".join(["lossbench", *cmd[1:]]), flush=True)
            t0 = time.monotonic()
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
                fail(f"lossbench data synth failed with exit code {proc.returncode}: {last}")
            print(f"cohort: {cases} cases of {mode['shape']} voxels at {mode['spacing']} mm in "
                  f"{time.monotonic() - t0:.0f} s (not part of the timed pipeline)")

        cells, figs = [], []
        for net in [n.strip() for n in args.nets.split(",") if n.strip()]:
            for nproc in nprocs:
                cell = run_cell(args, mode, home, cohort, net, nproc, gpus)
                cells.append(cell)
                figs.append(figures(cell, args.epochs, args.val_every, args.smoke))
        s = mode["share"]
        share = loss_share(args.loss, s["patch"], s["batch"], s["iters"], s["warmup"], "cpu" if args.smoke else "cuda")
        print_table(device, cells, figs, share, args.smoke, args)
        kept = args.keep or not made_home
        print(f"\nwhole script: {time.monotonic() - started:.0f} s" + (f"; home kept at {home}" if kept else ""))
        done = True
    finally:  # a temporary home goes after a success; after a failure it stays for the logs it names
        if done and made_home and not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

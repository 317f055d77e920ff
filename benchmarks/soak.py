"""Soak test of ``lossbench run`` as an adversarial user would try it (issue 15): kill -9, bad input,
concurrency. Run by hand; it prints one table (figures go to benchmarks/RESULTS.md).

1. **kill -9** (``--kills``, default 20): a tiny run is killed at a random moment (caching,
   training, checkpoint write, validation, test inference, artifact upload, finishing), plus at the
   worst fixed points (``LOSSBENCH_KILL_AT``: right after the run is created, right after each
   checkpoint); the same command is run again, and the resumed run must equal an uninterrupted
   reference run: final metrics, per-epoch histories (each step exactly once, same values),
   per-case and per-lesion tables, best-model weights; params present; no ``*.tmp`` left.
2. **malformed inputs** (``--bad``, at least 30 in the list): each must end as one line
   ``error: …`` with exit code 1, create no MLflow run, leave no checkpoint or temporary file,
   and never show a password.
3. **parallel cells** (``--parallel``, default 8): seeds 0..N-1 started at once on one fresh
   SQLite store: every run FINISHED with its params, histories and tables (nothing lost).

    python benchmarks/soak.py                      # everything (~20 min on 2 cores)
    python benchmarks/soak.py --kills 4 --bad 10 --parallel 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("lossbench"))
TINY = ["--loss", "dl", "--net", "attunet", "--epochs", "3", "--val-every", "1", "--patch", "16", "--spacing", "8",
        "--batch", "2", "-S", "sw_batch_size=32", "-N", "channels=4,8,16", "-N", "strides=2,2", "-D", "n_folds=2",
        "--device", "cpu"]
HISTORY = ("train_loss", "lr", "val_dice", "val_dice_best")
VOLATILE = ("time_", "epoch_seconds")  # wall-clock figures differ between any two runs


#: A frozen copy of the code the children import (set by main): the cell identity includes the code
#: version, so a commit made while the soak runs must not turn a resume into a new cell.
CODE: Path | None = None


def freeze_code(root: Path) -> Path:
    repo = Path(__file__).resolve().parents[1]
    out = root / "code"
    for part in ("lossbench", "plugins"):
        shutil.copytree(repo / part, out / part, ignore=shutil.ignore_patterns("__pycache__"))
    return out


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LOSSBENCH_HOME": str(home), "COLUMNS": "160"}
    if CODE is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(CODE), str(CODE / "plugins"), env.get("PYTHONPATH", "")])
    for key in ("LOSSBENCH_DEBUG", "LOSSBENCH_KILL_AT", "LOSSBENCH_FAIL_AT_EPOCH"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(home: Path, args: list[str], timeout: float = 900, cwd: Path | None = None, **extra: str):
    return subprocess.run([EXE, "run", *args], capture_output=True, text=True, env=env_for(home, **extra),
                          timeout=timeout, cwd=cwd or home.parent)


# -- reading a store back ----------------------------------------------------------------------
def snapshot(home: Path, experiment: str = "lossbench") -> list[dict]:
    """Every run of the store with what must survive a crash."""
    import pandas as pd
    import torch
    from mlflow.tracking import MlflowClient

    if not (home / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    out = []
    for r in client.search_runs([exp.experiment_id]):
        rid = r.info.run_id
        item = {"status": r.info.status, "params": dict(r.data.params), "seed": r.data.params.get("config.seed"),
                "metrics": {k: v for k, v in r.data.metrics.items() if not k.startswith(VOLATILE)},
                "history": {k: [(m.step, m.value) for m in sorted(client.get_metric_history(rid, k),
                                                                   key=lambda m: (m.step, m.timestamp))]
                            for k in HISTORY}}
        with tempfile.TemporaryDirectory() as tmp:
            try:
                for table in ("cases", "lesions"):
                    df = pd.read_csv(client.download_artifacts(rid, f"evaluation/{table}.csv", tmp))
                    item[table] = df.drop(columns=[c for c in ("run_id",) if c in df.columns])
                item["weights"] = torch.load(client.download_artifacts(rid, "best_model.pt", tmp),
                                             weights_only=True)["model"]
            except Exception as exc:  # noqa: BLE001 - a missing artifact is what we report
                item["artifact_error"] = f"{type(exc).__name__}: {exc}"
        out.append(item)
    return out


def differences(got: dict, ref: dict, epochs: int = 3) -> list[str]:
    """What differs between a run and the reference (empty: identical)."""
    problems = []
    if got["status"] != "FINISHED":
        problems.append(f"status {got['status']}")
    if "artifact_error" in got:
        problems.append(got["artifact_error"])
        return problems
    if not got["params"].get("split.sha256"):
        problems.append("params missing")
    for key in HISTORY:
        steps = [s for s, _ in got["history"][key]]
        if steps != list(range(epochs)):
            problems.append(f"{key} steps {steps}")
        elif got["history"][key] != ref["history"][key]:
            problems.append(f"{key} values differ")
    if got["metrics"] != ref["metrics"]:
        diff = sorted(k for k in set(got["metrics"]) | set(ref["metrics"])
                      if got["metrics"].get(k) != ref["metrics"].get(k))
        problems.append(f"metrics differ: {', '.join(diff[:5])}")
    for table in ("cases", "lesions"):
        if not got[table].equals(ref[table]):
            problems.append(f"{table}.csv differs")
    a, b = got["weights"], ref["weights"]
    if a.keys() != b.keys() or any(not (a[k] == b[k]).all() for k in a):
        problems.append("weights differ")
    return problems


def leftovers(home: Path) -> list[str]:
    return [str(p.relative_to(home)) for p in home.rglob("*.tmp")] if home.exists() else []


# -- 1. kill -9 ----------------------------------------------------------------------------------
def kill_trial(i: int, cohort: Path, root: Path, ref: dict, ref_seconds: float, rng: random.Random) -> dict:
    home = root / f"kill-{i:02d}"
    args = ["--data", str(cohort), *TINY]
    fixed = ["after-create-run", "after-checkpoint:0", "after-checkpoint:1", "after-checkpoint:2", "before-test",
             "before-finish"]
    if i < len(fixed):
        moment = fixed[i]
        first = run(home, args, LOSSBENCH_KILL_AT=moment)
        killed = first.returncode == -signal.SIGKILL
    else:
        delay = rng.uniform(0.3, 2.0) * ref_seconds  # trials run side by side: slower than the reference
        proc = subprocess.Popen([EXE, "run", *args], env=env_for(home), cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        state = list((home / "checkpoints").glob("*/state.pt"))
        try:
            runs = snapshot(home) if killed else []
        except Exception as exc:  # noqa: BLE001 - a store the kill left unreadable: the re-run will tell
            runs = [f"unreadable: {type(exc).__name__}"]
        epochs_done = output.count("checkpoint saved")
        if not runs:
            moment = f"t={delay:.0f}s before the run existed (caching, checks)"
        elif killed and "checkpoint saved" not in output and not state:
            moment = f"t={delay:.0f}s caching/first epoch (run created)"
        elif epochs_done < 3:
            moment = f"t={delay:.0f}s training/validation, after {epochs_done} epochs"
        else:
            moment = f"t={delay:.0f}s test inference/artifacts/finishing ({'state' if state else 'no state'})"
    second = run(home, args)
    try:
        runs = snapshot(home)
    except Exception as exc:  # noqa: BLE001
        return {"trial": i, "moment": moment, "killed": killed, "problems": [f"store unreadable: {exc}"[:200]]}
    problems = [] if second.returncode == 0 else [f"re-run exit {second.returncode}: {second.stderr.strip()[-200:]}"]
    if len(runs) != 1:
        problems.append(f"{len(runs)} runs")
    elif not problems:
        problems += differences(runs[0], ref)
    problems += [f"left {p}" for p in leftovers(home)]
    shutil.rmtree(home, ignore_errors=True)
    return {"trial": i, "moment": moment, "killed": killed, "problems": problems}


# -- 2. malformed inputs -------------------------------------------------------------------------
def malformed_inputs(cohort: Path, root: Path) -> list[tuple[str, list[str], dict[str, str], Path | None]]:
    """(name, argv, extra env, crafted folder or None). The crafted cohorts are copies of the good one."""
    base = ["--data", str(cohort), *TINY]
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "bad.toml").write_text("[train\nepochs = 3\n")
    (files / "unknown.toml").write_text("[trainer]\nepochs = 3\n")
    (files / "a-file").write_text("not a folder")

    def crafted(name: str, edit) -> Path:
        import nibabel as nib
        import numpy as np

        out = root / "cohorts" / name
        shutil.copytree(cohort, out)
        pet = next((out / "imagesTr").glob("*_0001.nii.gz"))
        label = next((out / "labelsTr").glob("*.nii.gz"))
        edit(out, pet, label, nib, np)
        return out

    def corrupt(out, pet, label, nib, np):
        pet.write_bytes(pet.read_bytes()[: pet.stat().st_size // 2])

    def nan_pet(out, pet, label, nib, np):
        img = nib.load(pet)
        data = np.asarray(img.dataobj, dtype=np.float32)
        data[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), pet)

    def negative_pet(out, pet, label, nib, np):
        img = nib.load(pet)
        data = np.asarray(img.dataobj, dtype=np.float32)
        data[1, 1, 1] = -0.5
        nib.save(nib.Nifti1Image(data, img.affine), pet)

    def nonbinary(out, pet, label, nib, np):
        img = nib.load(label)
        data = np.asarray(img.dataobj).astype(np.uint8)
        data[1, 1, 1] = 3
        nib.save(nib.Nifti1Image(data, img.affine), label)

    def no_label(out, pet, label, nib, np):
        label.unlink()

    def empty(out, pet, label, nib, np):
        pet.write_bytes(b"")

    cases = [
        ("unknown loss", [*base, "--loss", "l1dlf"], {}),
        ("unknown network", [*base, "--net", "atunet"], {}),
        ("unknown dataset", [*base, "--dataset", "psmaa"], {}),
        ("unknown loss param", [*base, "-L", "gama=1"], {}),
        ("loss param not a number", [*base, "-L", "smooth_nr=abc"], {}),
        ("loss constructor raises", [*base, "--loss", "dce", "-L", "lambda_ce=-1"], {}),
        ("network param wrong length", [*base, "-N", "strides=2,2,2,2,2"], {}),
        ("patch the network cannot take", [*base, "--patch", "18"], {}),
        ("patch 0", [*base, "--patch", "0"], {}),
        ("epochs 0", [*base, "--epochs", "0"], {}),
        ("batch -1", [*base, "--batch", "-1"], {}),
        ("lr -1", [*base, "-S", "lr=-1"], {}),
        ("cache_rate 7", [*base, "-S", "cache_rate=7"], {}),
        ("amp maybe", [*base, "-S", "amp=maybe"], {}),
        ("affine_prob 2", [*base, "-S", "affine_prob=2"], {}),
        ("unknown setting", [*base, "-S", "epohcs=3"], {}),
        ("val_every 0", [*base, "--val-every", "0"], {}),
        ("spacing 0", [*base, "--spacing", "0"], {}),
        ("fold out of range", [*base, "--fold", "7"], {}),
        ("n_folds 1", [*base, "-D", "n_folds=1"], {}),
        ("unknown preset", [*base, "--preset", "gpu"], {}),
        ("device tpu", [*base, "--device", "tpu"], {}),
        ("data folder missing", [*base, "--data", str(root / "nowhere")], {}),
        ("data is a file", [*base, "--data", str(files / "a-file")], {}),
        ("config missing", [*base, "--config", str(files / "missing.toml")], {}),
        ("config malformed", [*base, "--config", str(files / "bad.toml")], {}),
        ("config unknown section", [*base, "--config", str(files / "unknown.toml")], {}),
        ("server unreachable", [*base, "--tracking-uri", "http://127.0.0.1:9"], {}),
        ("server with password", [*base, "--tracking-uri", "http://alice:s3cret-pw@127.0.0.1:9"], {}),
        ("experiment ../../x", [*base, "--experiment", "../../x"], {}),
        ("experiment empty", [*base, "--experiment", ""], {}),
        ("LOSSBENCH_HOME under a file", base, {"LOSSBENCH_HOME": str(files / "a-file" / "home")}),
        ("corrupt PET", ["--data", str(crafted("corrupt", corrupt)), *TINY], {}),
        ("empty PET file", ["--data", str(crafted("empty", empty)), *TINY], {}),
        ("NaN in PET", ["--data", str(crafted("nan", nan_pet)), *TINY], {}),
        ("negative SUV -0.5", ["--data", str(crafted("negative", negative_pet)), *TINY], {}),
        ("label not binary", ["--data", str(crafted("nonbinary", nonbinary)), *TINY], {}),
        ("training label missing", ["--data", str(crafted("nolabel", no_label)), *TINY], {}),
        ("crafted checkpoint (pickle runs code)", base, {"_crafted_state": "1"}),
    ]
    return cases


def crafted_state(home: Path, identity: str, marker: Path) -> None:
    """A checkpoint of the cell whose pickle would create ``marker`` if unpickled with weights_only=False."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = home / "checkpoints" / identity
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "state.pt", "wb") as handle:
        pickle.dump({"format": "lossbench-state/2", "evil": Evil()}, handle)


def bad_trial(i: int, case, identity: str, root: Path) -> dict:
    name, argv, extra = case
    home = root / f"bad-{i:02d}"
    extra = dict(extra)
    marker = root / f"pwned-{i}"
    if extra.pop("_crafted_state", None):
        crafted_state(home, identity, marker)
    home_used = Path(extra.get("LOSSBENCH_HOME", home))
    result = run(home, argv, cwd=root, **extra)
    err = result.stderr
    problems = []
    if result.returncode != 1:
        problems.append(f"exit {result.returncode}")
    if not (err.startswith("error: ") and err.count("\n") == 1):
        problems.append(f"not one line: {err.strip()[-160:]!r}")
    if "s3cret-pw" in result.stdout + err:
        problems.append("password shown")
    if marker.exists():
        problems.append("crafted checkpoint ran code")
    runs = snapshot(home_used) if home_used.is_dir() else []
    if runs:
        problems.append(f"{len(runs)} MLflow run(s) created")
    problems += [f"left {p}" for p in leftovers(home_used) if home_used.is_dir()]
    if home_used.is_dir() and not extra and not name.startswith("crafted"):
        states = list((home_used / "checkpoints").glob("*/state.pt")) if (home_used / "checkpoints").exists() else []
        if states:
            problems.append("a checkpoint was written")
    shutil.rmtree(home, ignore_errors=True)
    return {"trial": name, "problems": problems, "line": err.strip()[:110]}


# -- 3. parallel cells ---------------------------------------------------------------------------
def parallel_cells(n: int, cohort: Path, root: Path) -> dict:
    home = root / "parallel"
    procs = [subprocess.Popen([EXE, "run", "--data", str(cohort), *TINY, "--seed", str(seed)], env=env_for(home),
                              cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in range(n)]
    errors = [p.communicate()[1] for p in procs]
    codes = [p.returncode for p in procs]
    runs = snapshot(home)
    problems = [f"seed {s} exit {c}: {e.strip()[-160:]}" for s, (c, e) in enumerate(zip(codes, errors)) if c != 0]
    seeds = sorted(int(r["seed"]) for r in runs if r["seed"] is not None)
    if seeds != list(range(n)):
        problems.append(f"runs of seeds {seeds}")
    for r in runs:
        if r["status"] != "FINISHED" or "artifact_error" in r or not r["params"].get("split.sha256"):
            problems.append(f"seed {r['seed']}: {r['status']} {r.get('artifact_error', '')}")
        for key in HISTORY:
            if [s for s, _ in r["history"][key]] != [0, 1, 2]:
                problems.append(f"seed {r['seed']}: {key} steps {[s for s, _ in r['history'][key]]}")
    problems += [f"left {p}" for p in leftovers(home)]
    return {"problems": problems, "runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--bad", type=int, default=100, help="at most this many malformed inputs (all: 39)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="trials run side by side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lossbench_psma.synth import config_for, generate_cohort

    global CODE
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="lossbench-soak-"))
    try:
        CODE = freeze_code(root)
        cohort = generate_cohort(root / "cohort", 8, seed=3, config=config_for(spacing=8.0), test_fraction=0.25)
        t0 = time.perf_counter()
        ref_run = run(root / "reference", ["--data", str(cohort), *TINY])
        ref_seconds = time.perf_counter() - t0
        if ref_run.returncode != 0:
            sys.exit(f"the reference run failed: {ref_run.stderr[-500:]}")
        (ref,) = snapshot(root / "reference")
        identity = next((root / "reference" / "checkpoints").iterdir()).name  # the cell's folder (its lock)
        print(f"reference run: {ref_seconds:.0f} s; machine: {os.cpu_count()} CPUs", flush=True)

        rows = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            delays = [random.Random(rng.random()) for _ in range(args.kills)]
            kills = list(pool.map(lambda i: kill_trial(i, cohort, root, ref, ref_seconds, delays[i]),
                                  range(args.kills)))
        for k in kills:
            print(f"  kill {k['trial']:2d} {k['moment']:<70} {'identical' if not k['problems'] else k['problems']}",
                  flush=True)
        rows.append(("kill -9 at a random or worst moment -> re-run identical to uninterrupted", len(kills),
                     sum(not k["problems"] for k in kills)))

        cases = malformed_inputs(cohort, root)[: args.bad]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            bads = list(pool.map(lambda ic: bad_trial(ic[0], ic[1], identity, root), enumerate(cases)))
        for b in bads:
            print(f"  bad  {b['trial']:<38} {'ok' if not b['problems'] else b['problems']}  {b['line']}", flush=True)
        rows.append(("malformed input -> one line, exit 1, no run, nothing half-written", len(bads),
                     sum(not b["problems"] for b in bads)))

        if args.parallel:
            t0 = time.perf_counter()
            par = parallel_cells(args.parallel, cohort, root)
            print(f"  parallel: {par['runs']} runs in {time.perf_counter() - t0:.0f} s "
                  f"{'ok' if not par['problems'] else par['problems']}", flush=True)
            rows.append((f"{args.parallel} cells at once on one fresh SQLite store -> nothing lost", 1,
                         int(not par["problems"])))

        print()
        print(f"{'check':<78} {'trials':>6} {'passed':>6}")
        for what, n, ok in rows:
            print(f"{what:<78} {n:>6} {ok:>6}")
        failed = any(ok < n for _, n, ok in rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

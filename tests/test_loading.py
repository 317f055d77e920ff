"""The cell's data: the disk store of preprocessed cases, per-case seeding, the epoch sampler, loader workers.

Real MONAI transforms on a real (tiny) synthetic cohort; expectations are computed by hand or by
drawing the same thing another way (in another order, in worker processes, from a fresh store).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lossbench.loading import (
    CellDataset,
    EpochSampler,
    PreprocessedStore,
    item_seed,
    resolve_workers,
    train_loader,
)


@pytest.fixture(scope="module")
def psma(tmp_path_factory):
    from lossbench_psma.dataset import build_psma
    from lossbench_psma.synth import config_for, generate_cohort

    root = generate_cohort(tmp_path_factory.mktemp("cohort") / "psma", 4, seed=5, config=config_for(spacing=8.0),
                           test_fraction=0.25)
    ds = build_psma(data=str(root))
    return ds, ds.data_dicts([c for c in ds.cases() if c.split == "train"])


def _train_tf(ds, **extra):
    return ds.transforms("train", patch=(16, 16, 16), spacing=(8.0, 8.0, 8.0), num_samples=2, **extra)


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_item_seeds_depend_on_seed_epoch_and_index_only():
    assert item_seed(0, 3, 7) == item_seed(0, 3, 7)
    assert len({item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}) == 27


def test_the_sampler_covers_every_case_once_per_epoch_split_evenly_over_ranks():
    one = list(EpochSampler(10, seed=4))
    assert sorted(i for _, i in one) == list(range(10)) and {e for e, _ in one} == {0}
    sampler = EpochSampler(10, seed=4)
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != [i for _, i in one]  # a new order each epoch
    ranks = [EpochSampler(10, seed=4, rank=r, world=3) for r in range(3)]
    shares = [[i for _, i in r] for r in ranks]
    assert [len(s) for s in shares] == [4, 4, 4] == [len(r) for r in ranks]  # padded: 12 = 10 + 2 repeats
    assert set().union(*shares) == set(range(10))
    # rank r takes every 3rd case of the permutation a single process walks, padded with its first 2
    padded = [i for _, i in one] + [i for _, i in one][:2]
    assert shares == [padded[r::3] for r in range(3)]


def test_worker_defaults_follow_the_device_and_the_cores(monkeypatch):
    import lossbench.loading as loading

    assert resolve_workers(3, "cpu") == 3 and resolve_workers(0, "cuda") == 0
    for cores, cpu, cuda, cuda_two in ((2, 0, 1, 0), (4, 0, 3, 1), (16, 4, 8, 7), (64, 4, 8, 8)):
        monkeypatch.setattr(loading, "usable_cores", lambda cores=cores: cores)
        assert (resolve_workers("auto", "cpu"), resolve_workers("auto", "cuda"),
                resolve_workers("auto", "cuda", nproc=2)) == (cpu, cuda, cuda_two)


def test_a_draw_depends_on_epoch_and_case_not_on_order_and_leaves_the_cache_unchanged(psma):
    ds, items = psma
    data = CellDataset(items, _train_tf(ds), seed=1)
    before = [{k: v.clone() for k, v in data.base(i).items() if isinstance(v, torch.Tensor)} for i in range(len(data))]
    forward = [data[(2, i)] for i in range(len(data))]
    backward = [data[(2, i)] for i in reversed(range(len(data)))][::-1]
    assert all(_same(a, b) for a, b in zip(forward, backward))
    assert not _same(data[(3, 0)], forward[0])  # another epoch, another draw
    assert len(forward[0]) == 2 and forward[0][0]["image"].shape == (2, 16, 16, 16)  # num_samples patches
    for i, saved in enumerate(before):  # the random transforms wrote nothing into the cached cases
        assert all(torch.equal(saved[k], data.base(i)[k]) for k in saved)


def test_loader_workers_draw_exactly_what_the_training_thread_draws(psma):
    ds, items = psma
    data = CellDataset(items, _train_tf(ds), seed=2)

    def epochs(workers: int) -> list:
        sampler = EpochSampler(len(data), seed=2)
        loader = train_loader(data, sampler, batch_size=2, workers=workers, pin_memory=False)
        out = []
        for epoch in (0, 1):  # persistent workers: the epoch travels with each index
            sampler.set_epoch(epoch)
            out += [(b["image"].clone(), b["label"].clone()) for b in loader]
        return out

    inline, workers = epochs(0), epochs(2)
    assert len(inline) == len(workers) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(inline, workers))


def test_the_store_is_read_back_by_another_cell_and_invalidated_by_what_changes_preprocessing(psma, tmp_path):
    ds, items = psma
    key = {"dataset": "psma", "stage": "train", "spacing": (8.0, 8.0, 8.0), "code": "x"}
    first = PreprocessedStore(tmp_path, key)
    a = CellDataset(items, _train_tf(ds), seed=0, store=first)
    assert (first.hits, first.misses) == (0, len(items))
    assert sorted(p.name for p in first.folder.glob("*.pt")) == sorted(first.path(i).name for i in items)
    assert not list(first.folder.glob("*.tmp*")) and not list(first.folder.glob(".*"))  # renamed into place

    second = PreprocessedStore(tmp_path, key)  # another cell, another process: the same key
    b = CellDataset(items, _train_tf(ds), seed=0, store=second)
    assert (second.hits, second.misses) == (len(items), 0)
    assert all(_same(a[(0, i)], b[(0, i)]) for i in range(len(items)))

    other = PreprocessedStore(tmp_path, {**key, "spacing": (4.0, 4.0, 4.0)})  # another preprocessing
    assert other.folder != first.folder
    newer = PreprocessedStore(tmp_path, {**key, "code": "y"})  # another code version
    assert newer.folder != first.folder

    # a rewritten input file: that case alone is computed again
    pet = Path(items[0]["PT"])
    stamp = pet.stat().st_mtime_ns + 5_000_000_000
    os.utime(pet, ns=(stamp, stamp))
    third = PreprocessedStore(tmp_path, key)
    CellDataset(items, _train_tf(ds), seed=0, store=third)
    assert (third.hits, third.misses) == (len(items) - 1, 1)


def test_a_torn_store_file_is_computed_again(psma, tmp_path):
    ds, items = psma
    key = {"dataset": "psma", "stage": "val", "code": "x"}
    store = PreprocessedStore(tmp_path, key)
    val_tf = ds.transforms("val", spacing=(8.0, 8.0, 8.0))
    good = CellDataset(items[:1], val_tf, seed=0, store=store)[0]
    store.path(items[0]).write_bytes(b"not a torch file")
    again = PreprocessedStore(tmp_path, key)
    assert _same(CellDataset(items[:1], val_tf, seed=0, store=again)[0], good)
    assert (again.hits, again.misses) == (0, 1)


def test_part_of_the_cases_in_memory_the_rest_read_per_access(psma, tmp_path):
    ds, items = psma
    store = PreprocessedStore(tmp_path, {"k": 1})
    data = CellDataset(items, _train_tf(ds), seed=0, cache_rate=0.5, store=store)
    assert sum(m is not None for m in data.memory) == len(items) // 2
    full = CellDataset(items, _train_tf(ds), seed=0)
    assert all(_same(data[(1, i)], full[(1, i)]) for i in range(len(items)))
    assert all(store.path(i).is_file() for i in items)


# -- through the real command (tests/test_run.py's tiny cohort) -------------------------------------
from tests.test_run import TINY, cohort, final_metrics, lossbench, mlflow_runs  # noqa: E402,F401 - cohort: a fixture


def _summary(home: Path) -> tuple:
    (run,) = mlflow_runs(home)[1]
    return run, final_metrics(run)


@pytest.mark.slow
def test_workers_change_nothing_and_a_resumed_run_with_workers_equals_the_uninterrupted_one(cohort, tmp_path):  # noqa: F811
    args = ["--data", str(cohort), "--loss", "dfl", "--net", "attunet", "--seed", "2", *TINY]
    inline = lossbench(tmp_path / "inline", *args, "-S", "workers=0")
    assert inline.returncode == 0, inline.stderr[-2000:]
    workers = lossbench(tmp_path / "workers", *args, "-S", "workers=2")
    assert workers.returncode == 0, workers.stderr[-2000:]
    run_0, metrics_0 = _summary(tmp_path / "inline")
    run_2, metrics_2 = _summary(tmp_path / "workers")
    assert run_2.data.metrics["loader_workers"] == 2 and run_0.data.metrics["loader_workers"] == 0
    assert run_2.data.tags["lossbench.cell"] == run_0.data.tags["lossbench.cell"]  # the same cell
    assert metrics_2 == metrics_0

    home = tmp_path / "killed"
    killed = lossbench(home, *args, "-S", "workers=2", LOSSBENCH_KILL_AT="after-checkpoint:1")
    assert killed.returncode != 0
    resumed = lossbench(home, *args, "-S", "workers=2")
    assert resumed.returncode == 0 and "resum" in resumed.stdout, resumed.stderr[-2000:]
    assert _summary(home)[1] == metrics_0


@pytest.mark.slow
def test_a_second_cell_reads_the_preprocessed_cases_and_a_preprocessing_change_computes_them(cohort, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    base = ["--data", str(cohort), "--net", "attunet", *TINY]
    # 3 training + 3 validation cases (fold 0 of 2 over the 6-case pool)
    for loss, extra, read, computed in (("dl", [], 0, 6), ("dfl", [], 6, 0), ("dl", ["-D", "pet_scale=2"], 0, 6)):
        done = lossbench(home, *base, "--loss", loss, *extra, "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)["summary"]
        assert (summary["preprocessed_cases_read"], summary["preprocessed_cases_computed"]) == (read, computed), loss
    stores = [p for p in (home / "cache" / "preprocessed").iterdir() if p.is_dir()]
    assert len(stores) == 4  # (train, val) × two PET scalings
    off = lossbench(home, *base, "--loss", "l1dfl", "-S", "disk_cache=false", "--json")
    assert off.returncode == 0, off.stderr[-2000:]
    assert "preprocessed_cases_read" not in json.loads(off.stdout)["summary"]

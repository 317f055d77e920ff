"""One cell on two processes (``lossbench run --nproc 2``: DDP with gloo on CPU), end to end.

The real executable on the tiny cohort of tests/test_run.py; MLflow read back. Rank 0 alone logs,
checkpoints and tests; the other rank trains and validates its share. The global L1DFL histogram is
checked against a single process by hand-built halves.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch

from tests.test_run import TINY, cohort, final_metrics, lossbench, mlflow_runs  # noqa: F401 - cohort: a fixture

pytestmark = pytest.mark.slow

DDP = ["--loss", "l1dfl", "--net", "attunet", *TINY, "--nproc", "2"]


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory):  # noqa: F811 - the imported fixture
    """The uninterrupted two-process cell: its home and its --json document."""
    home = tmp_path_factory.mktemp("ddp") / "home"
    done = lossbench(home, "--data", str(cohort), *DDP, "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return home, json.loads(done.stdout)  # stdout is the document alone: rank 0 printed to stderr


def test_a_two_process_cell_logs_once_from_rank_0(reference):
    home, doc = reference
    client, runs = mlflow_runs(home)
    assert len(runs) == 1  # the second rank created no run
    run = runs[0]
    assert run.info.status == "FINISHED" and doc["run_id"] == run.info.run_id
    assert run.data.params["config.nproc"] == "2" and run.data.params["nproc"] == "2"
    for key in ("train_loss", "val_dice", "lr"):  # each epoch logged once, by rank 0
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2], key
    assert "evaluation/cases.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert not list((home / "checkpoints").glob("*/state.pt"))  # removed once FINISHED
    # each rank gets ceil(3 training cases / 2 ranks) = 2 cases an epoch, one batch of 2: 1 step an
    # epoch, 3 in all (one process: 3 cases in batches of 2, 2 steps an epoch, 6 in all)
    assert run.data.metrics["steps"] == 3


def test_the_same_seed_gives_the_same_metrics_on_two_processes(reference, cohort, tmp_path):  # noqa: F811
    home, doc = reference
    again = lossbench(tmp_path / "home", "--data", str(cohort), *DDP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert final_metrics(mlflow_runs(tmp_path / "home")[1][0]) == final_metrics(mlflow_runs(home)[1][0])


def test_nproc_is_part_of_the_cell(reference, cohort, tmp_path):  # noqa: F811
    home, doc = reference
    single = lossbench(tmp_path / "home", "--data", str(cohort), *DDP[:-2])  # the same cell on one process
    assert single.returncode == 0, single.stderr[-3000:]
    (one,) = mlflow_runs(tmp_path / "home")[1]
    (two,) = mlflow_runs(home)[1]
    assert one.data.params["config.nproc"] == "1"
    assert one.data.tags["lossbench.cell"] != two.data.tags["lossbench.cell"]  # another identity


def test_a_killed_two_process_cell_resumes_to_the_uninterrupted_result(reference, cohort, tmp_path):  # noqa: F811
    ref_home, _ = reference
    home = tmp_path / "home"
    killed = lossbench(home, "--data", str(cohort), *DDP, LOSSBENCH_KILL_AT="after-checkpoint:1")
    assert killed.returncode == 1
    last = killed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the distributed run ended") and "resume" in last
    client, (run,) = mlflow_runs(home)
    assert run.info.status == "RUNNING"  # rank 0 was killed -9: nobody closed it
    resumed = lossbench(home, "--data", str(cohort), *DDP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming MLflow run" in resumed.stdout + resumed.stderr
    client, (run,) = mlflow_runs(home)
    assert run.info.status == "FINISHED"
    assert final_metrics(run) == final_metrics(mlflow_runs(ref_home)[1][0])


def test_a_finished_two_process_cell_is_skipped(reference, cohort):  # noqa: F811
    """As on one process: rank 0 finds the finished run, the command says so (it reads rank 0's answer)."""
    home, doc = reference
    again = lossbench(home, "--data", str(cohort), *DDP)
    assert again.returncode == 0 and "already has a finished run" in again.stdout


# -- L1DFL's histogram over the ranks -----------------------------------------------------------------
def _rank(rank: int, world: int, store: str, g_halves: list[torch.Tensor], out: str) -> None:
    import torch.distributed as dist

    from lossbench_l1dfl.loss import harmonising_weights

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        local = harmonising_weights(g_halves[rank], 0.05)
        pooled = harmonising_weights(g_halves[rank], 0.05, global_histogram=True)
        torch.save({"local": local, "pooled": pooled}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_the_global_histogram_weighs_each_rank_by_the_whole_step():
    """Two ranks each holding half of g: pooled weights are the single-process weights of all of g,
    local ones those of each half alone (the reference's per-GPU histogram)."""
    import torch.multiprocessing as mp

    from lossbench_l1dfl.loss import harmonising_weights

    generator = torch.Generator().manual_seed(0)
    halves = [torch.rand(2, 2, 6, 6, generator=generator) ** 3, torch.rand(2, 2, 6, 6, generator=generator)]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "w")
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        mp.spawn(_rank, args=(2, os.path.join(folder, "store"), halves, out), nprocs=2, join=True)
        got = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    whole = harmonising_weights(torch.cat(halves), 0.05)
    for r in range(2):
        assert torch.equal(got[r]["local"], harmonising_weights(halves[r], 0.05))
        assert torch.equal(got[r]["pooled"], whole[2 * r:2 * r + 2])
    assert not torch.equal(got[0]["local"], whole[:2])  # the halves differ: pooling matters here

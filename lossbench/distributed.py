"""One cell on several processes: ``lossbench run --nproc G`` (DDP; gloo on CPU, NCCL on CUDA).

The command that asks for it checks everything first, as for one process, then starts ``G`` ranks
(``python -m lossbench.distributed SPEC``, each with torchrun's environment: ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``) and supervises them as torchrun's agent would: when one fails
the others are stopped, and they die with the command. The ranks meet through a file (a
``torch.distributed`` FileStore) and gloo talks over loopback, so nothing listens beyond this machine:
torchrun's agent opens its rendezvous store on every network interface even when told 127.0.0.1
(seen with ``ss -ltnp``). The same module also runs under torchrun (``torchrun --nproc-per-node G -m
lossbench.distributed SPEC``: its ``env://`` store). Each rank rebuilds the same prepared cell from the
spec (its identity must match), then:

- **rank 0** does what a single process does: holds the cell's lock, finds, resumes or creates the
  MLflow run, logs, writes checkpoints, and alone runs the test inference and evaluation. Once the run
  and the checkpoint to continue from are settled it tells the other ranks (a broadcast);
- **the other ranks** wait for that word, load the same checkpoint when there is one, train their
  share of each epoch (:class:`lossbench.loading.EpochSampler`), validate their share of the
  validation cases (the Dice sums are all-reduced, so every rank selects the same best epoch), log
  nothing and stop after the last epoch.

Gradients are averaged by ``DistributedDataParallel``: a step holds ``nproc × batch × num_samples``
patches, which is why ``nproc`` is part of the cell's identity. L1DFL's histogram stays each rank's
own (the reference's per-GPU behaviour) unless ``-L global_histogram=true``.

Rank 0 writes what happened (the result, or the error) to a file the command reads back, so a DDP
cell ends with the same one-line errors and the same summary as a single-process one. A cell whose
rank 0 is killed is resumed like any other: re-run the command. The reference validated on GPU 0
only, over half the validation set (a quirk of its script); here every rank validates its share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError

SPEC_FORMAT = "lossbench-ddp-spec/1"
#: The FileStore through which the ranks started by :func:`launch` meet (torchrun's ranks use its store).
STORE_ENV = "LOSSBENCH_DDP_STORE"
#: How long a rank waits in a collective (rank 0 reading a large cohort, validating): then it fails.
COLLECTIVE_TIMEOUT = dt.timedelta(hours=2)


class Group:
    """The processes of one cell. A single process is a group of one, where every operation is a no-op."""

    def __init__(self, rank: int = 0, world: int = 1, device: Any = None) -> None:
        self.rank, self.world, self.device = int(rank), int(world), device
        self.announced = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def announce(self, decision: dict[str, Any] | None) -> None:
        """Rank 0: tell the other ranks which run they train for (None: stop, nothing to train)."""
        if not self.announced:
            self.announced = True
            self.broadcast(decision)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        backend = dist.get_backend()
        device = self.device if backend == "nccl" else "cpu"
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]


#: The group of a single-process cell.
SINGLE = Group()


def all_reduce_counts(counts: Any) -> Any:
    """Sum an integer tensor over the ranks of the current process group, in place (no group: unchanged).
    Used by L1DFL's ``global_histogram``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts)
    return counts


# -- the command's side ------------------------------------------------------------------------------
def launch(prepared: Any, *, tracking_uri: str | None, experiment: str, device: str, resume: bool, force: bool,
           parent_run_id: str | None, extra_params: dict[str, Any] | None) -> Any:
    """Run a prepared cell on ``prepared.config.nproc`` processes (:func:`_run_ranks`); returns rank 0's
    :class:`lossbench.engine.CellResult` or raises its error."""
    import torch

    from lossbench.engine import CellAlreadyFinished, CellResult, resolve_device

    nproc = prepared.config.nproc
    kind = resolve_device(device).type
    if kind == "cuda" and torch.cuda.device_count() < nproc:
        raise LossbenchError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s) are visible; use "
                             f"--nproc {max(1, torch.cuda.device_count())} or --device cpu")
    with tempfile.TemporaryDirectory(prefix="lossbench-ddp-") as folder:
        spec_path, result_path = Path(folder) / "spec.json", Path(folder) / "result.json"
        spec = {"format": SPEC_FORMAT, "config": prepared.config.as_dict(), "identity": prepared.identity,
                "tracking_uri": tracking_uri, "experiment": experiment, "device": kind, "resume": resume,
                "force": force, "parent_run_id": parent_run_id, "extra_params": extra_params or {},
                "result": str(result_path)}
        spec_path.write_text(json.dumps(spec, default=str))
        code = _run_ranks(nproc, spec_path, Path(folder) / "store")
        answer = json.loads(result_path.read_text()) if result_path.exists() else None
    if answer is None:
        raise LossbenchError(f"the distributed run ended (a rank exited with code {code}) before rank 0 reported; "
                             "run the same command again to resume from the last checkpoint")
    if "result" in answer:
        return CellResult(**answer["result"])
    if answer.get("finished_run"):
        raise CellAlreadyFinished(answer["finished_run"])
    if answer.get("run_id"):  # the same words as a single process's failed run (lossbench.api.run)
        raise LossbenchError(f"training failed: {answer['error']} (MLflow run {answer['run_id']} is marked FAILED; "
                             "run the same command again to resume from the last checkpoint)")
    raise LossbenchError(answer["error"])


def _run_ranks(nproc: int, spec_path: Path, store: Path) -> int:
    """Start the ``nproc`` ranks and wait for them; when one fails, stop the others (SIGTERM, then SIGKILL).

    The ranks meet through a file (``torch.distributed``'s FileStore) and gloo talks over loopback:
    nothing listens beyond this machine (torchrun's agent would open a store on every interface).
    Each rank gets torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE), and
    dies with this process (``PR_SET_PDEATHSIG``) if it is killed.
    """
    import time

    from lossbench.loading import usable_cores
    from lossbench.processes import spawn, stop_group

    env = dict(os.environ)
    # each rank's share of the cores; loopback for gloo's sockets (NCCL's too, on one node)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // nproc)))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    env[STORE_ENV] = str(store)
    procs = []
    for rank in range(nproc):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                    "LOCAL_WORLD_SIZE": str(nproc)}
        # rank 0 prints where this command prints (stderr under --json, keeping stdout for the document)
        procs.append(spawn([sys.executable, "-m", "lossbench.distributed", str(spec_path)], env=rank_env,
                           stdout=_fileno(sys.stdout), stderr=_fileno(sys.stderr)))
    failed = 0
    try:
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            failed = next((c for c in codes if c not in (None, 0)), 0)
            if failed:  # the others wait in a collective that will never complete
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # the ranks run in their own sessions: pass the interrupt on (runs KILLED)
        for p in procs:
            stop_group(p.pid, grace=60.0)
        raise
    for p in procs:
        if p.poll() is None:
            stop_group(p.pid)
        p.wait()
    return failed or next((p.returncode for p in procs if p.returncode), 0)


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the ranks' side ---------------------------------------------------------------------------------
def _write_answer(path: str, answer: dict[str, Any]) -> None:
    from lossbench.fsio import atomic_write

    atomic_write(Path(path), json.dumps(answer, default=str))


def main(argv: list[str] | None = None) -> int:
    """A rank of a DDP cell (started by :func:`launch`, or by torchrun)."""
    import torch
    import torch.distributed as dist

    from lossbench.cli._common import registry
    from lossbench.engine import CellAlreadyFinished, prepare, run_cell
    from lossbench.runconfig import RunConfig

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise SystemExit(f"lossbench.distributed: {argv[0]} is not a {SPEC_FORMAT} file")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if spec["device"] == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")

    def interrupt(signum: int, frame: object) -> None:  # torchrun's SIGTERM: end like Ctrl-C (run KILLED)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "MASTER_ADDR" in os.environ:  # started by torchrun (e.g. by hand, or across nodes): its store
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group(backend, init_method=f"file://{os.environ[STORE_ENV]}", rank=rank, world_size=world,
                                timeout=COLLECTIVE_TIMEOUT)
    group = Group(rank, world, device)
    try:
        prepared = prepare(RunConfig.from_dict(spec["config"]), registry())
        if prepared.identity != spec["identity"]:
            raise LossbenchError(f"rank {rank} prepared cell {prepared.identity}, not {spec['identity']}: the code "
                                 "or the data changed while the run started")
        if rank == 0:
            return _lead(prepared, group, spec, run_cell, CellAlreadyFinished)
        return _follow(prepared, group)
    finally:
        dist.destroy_process_group()


def _lead(prepared: Any, group: Group, spec: dict[str, Any], run_cell: Any, already: type) -> int:
    from lossbench.cli._common import console
    from lossbench.cli._run_common import progress_bar

    answer: dict[str, Any]
    runs: list[str] = []
    try:
        out = console()
        with progress_bar(out) as progress:
            def started(run_id: str, resumed: bool) -> None:
                runs.append(run_id)
                out.print(f"{'resuming' if resumed else 'started'} MLflow run {run_id} on {group.world} processes",
                          highlight=False)

            result = run_cell(
                prepared, tracking_uri=spec["tracking_uri"], experiment=spec["experiment"], device=spec["device"],
                resume=spec["resume"], force=spec["force"], parent_run_id=spec["parent_run_id"], progress=progress,
                extra_params={**spec["extra_params"], "nproc": group.world}, on_start=started, group=group)
        answer = {"result": dataclasses.asdict(result)}
    except already as done:
        answer = {"finished_run": done.run_id}
    except LossbenchError as exc:
        answer = {"error": str(exc)}
    except KeyboardInterrupt:
        group.announce(None)
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the command, which words it as for one process
        answer = {"error": f"{type(exc).__name__}: {exc}", "run_id": runs[0] if runs else None}
    training = group.announced
    group.announce(None)  # the others still wait when rank 0 stopped before training: let them go
    _write_answer(spec["result"], answer)
    if "error" in answer and training:
        # the other ranks wait in a collective that will never come: a non-zero exit makes torchrun end them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


def _follow(prepared: Any, group: Group) -> int:
    from lossbench.engine import Cell

    decision = group.broadcast(None)
    if decision is None:
        return 0
    cell = Cell(prepared, None, group.device, group=group)
    state = None
    if decision["resume_epoch"] is not None:
        state = cell.load_state()
        if state is None or int(state["epoch"]) != decision["resume_epoch"]:
            raise LossbenchError(f"rank {group.rank}: the checkpoint in {cell.folder} is not the one rank 0 resumed")
    cell.run(decision["run_id"], state)
    return 0


if __name__ == "__main__":
    sys.exit(main())

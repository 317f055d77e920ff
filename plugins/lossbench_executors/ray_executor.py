"""The ``ray`` executor: one Ray task per cell, running the cell's ``lossbench run`` argv.

The task asks Ray for ``gpus_per_cell`` GPUs and runs the argv as a subprocess on whichever node
Ray chose, with the ``CUDA_VISIBLE_DEVICES`` Ray set. What comes back is only how the process
ended (:class:`lossbench.executors.Outcome`); the matrix reads the run from MLflow by identity.

Retries: a crashed cell raises :class:`lossbench.executors.CellCrashed` in the task, which Ray
retries (``retry_exceptions``); a dead worker or node is retried by Ray's ``max_retries``. Either
way the retry runs the same argv, which resumes the same MLflow run. A user error or a NaN loss
returns normally: not retried. ``cancel`` interrupts the task (``ray.cancel``), which stops the
cell with SIGTERM so that its run is marked KILLED.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from lossbench.errors import LossbenchError
from lossbench.executors import CellCrashed, CellTask, Executor, Outcome, run_argv


def run_cell_task(fields: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: run one cell's argv on this node; raise :class:`CellCrashed` to be retried."""
    outcome = run_argv(CellTask(**fields))
    if outcome.retryable:
        raise CellCrashed(f"{outcome.error} (attempt {outcome.attempt} on {outcome.host})")
    return outcome.as_dict()


class RayExecutor(Executor):
    name = "ray"
    queues = True

    def __init__(self, address: str | None = None, gpus_per_cell: float | None = None, cpus_per_cell: float = 1.0,
                 num_gpus: int | None = None, num_cpus: int | None = None, max_retries: int = 2,
                 multi_host: bool | None = None, shared_fs: bool = False, jobs: int | None = None,
                 **context: Any) -> None:
        try:
            import ray
        except ImportError:
            raise LossbenchError("the ray executor needs Ray: pip install 'lossbench[ray]'") from None
        if max_retries < 0 or cpus_per_cell < 0 or (gpus_per_cell is not None and gpus_per_cell < 0):
            raise LossbenchError("-X max_retries, cpus_per_cell and gpus_per_cell must not be negative")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home from a benchmark
        self._ray = ray
        self.address = address
        self.jobs = jobs
        self.shared_fs = shared_fs
        self.multi_host = bool(address) if multi_host is None else multi_host
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            if num_gpus is not None or num_cpus is not None:
                raise LossbenchError("-X num_gpus/num_cpus size a private Ray instance; they do not apply with -X address")
            init["address"] = address
        else:
            init.update(num_gpus=num_gpus, num_cpus=num_cpus)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            ray.init(**init)
        except Exception as exc:  # noqa: BLE001 - ConnectionError and friends: one line
            raise LossbenchError(f"cannot start or join Ray ({address or 'a private instance'}): "
                                 f"{type(exc).__name__}: {exc}") from None
        finally:
            # Ray installs a fatal-signal handler that aborts the driver on SIGTERM: restore ours,
            # so that a SIGTERM cancels the cells (their runs KILLED) like Ctrl-C
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        resources = ray.cluster_resources()
        self.cluster_gpus = float(resources.get("GPU", 0))
        self.cluster_cpus = float(resources.get("CPU", 0))
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.gpus_per_cell = (1.0 if self.cluster_gpus else 0.0) if gpus_per_cell is None else gpus_per_cell
        if self.gpus_per_cell > self.cluster_gpus:
            self.close()
            raise LossbenchError(f"-X gpus_per_cell={self.gpus_per_cell:g} but the Ray cluster has "
                                 f"{self.cluster_gpus:g} GPUs")
        self.cpus_per_cell = cpus_per_cell
        self._remote = ray.remote(run_cell_task)
        self._options = {"num_gpus": self.gpus_per_cell, "num_cpus": cpus_per_cell, "max_retries": max_retries,
                         "retry_exceptions": [CellCrashed]}

    def parallelism(self, pending: int) -> int:
        fits = []
        if self.gpus_per_cell:
            fits.append(int(self.cluster_gpus // self.gpus_per_cell))
        if self.cpus_per_cell:
            fits.append(int(self.cluster_cpus // self.cpus_per_cell))
        slots = max(min(fits), 1) if fits else pending
        return max(min(slots, pending, self.jobs or pending), 1 if pending else 0)

    def processes_per_cell(self, nproc: int) -> None:
        if self.gpus_per_cell and nproc > self.gpus_per_cell:  # one GPU per DDP process
            if nproc > self.cluster_gpus:
                raise LossbenchError(f"--nproc {nproc}: the Ray cluster has {self.cluster_gpus:g} GPUs")
            self.gpus_per_cell = float(nproc)
            self._options["num_gpus"] = self.gpus_per_cell

    def describe(self) -> str:
        where = self.address or "a private instance"
        return (f"ray ({where}: {self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cluster_gpus:g} GPUs, "
                f"{self.cluster_cpus:g} CPUs; {self.gpus_per_cell:g} GPU and {self.cpus_per_cell:g} CPU per cell)")

    def submit(self, task: CellTask) -> Any:
        return self._remote.options(name=task.name, **self._options).remote(dataclasses.asdict(task))

    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        ray = self._ray
        ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=timeout, fetch_local=True)
        return [(ref, self._outcome(ref)) for ref in ready]

    def _outcome(self, ref: Any) -> Outcome:
        from ray import exceptions as rex

        try:
            return Outcome(**self._ray.get(ref))
        except rex.TaskCancelledError:
            return Outcome("cancelled", error="cancelled")
        except rex.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, KeyboardInterrupt):
                return Outcome("cancelled", error="cancelled")
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            return Outcome("failed", error=f"{message} — retries exhausted"[:500])
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as exc:
            return Outcome("failed", error=f"{type(exc).__name__}: the cell's worker or node died, retries exhausted")
        except rex.RayError as exc:
            return Outcome("failed", error=f"{type(exc).__name__}: {str(exc).strip()[:400]}")

    def cancel(self, handles: Sequence[Any]) -> None:
        for ref in handles:
            try:
                self._ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: the cell gets SIGTERM
            except Exception:  # noqa: BLE001 - already finished
                pass

    def close(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()  # stops a private instance; leaves a joined cluster running

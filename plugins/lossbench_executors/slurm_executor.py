"""The ``slurm`` executor: one submitit job per cell, running the cell's ``lossbench run`` argv.

submitit pickles the job's callable, :class:`SlurmCell`: it holds the cell's argv, its extra
environment and its log path, nothing else. On the node it runs the argv as a subprocess.

- Preemption and time limits: Slurm signals the job (SIGUSR2, ``signal_delay_s`` before the
  limit); submitit calls :meth:`SlurmCell.checkpoint`, which stops the cell with SIGTERM (its run
  is marked KILLED, its last checkpoint kept) and hands back the same cell, and submitit requeues
  the job. The requeued job runs the argv again, which resumes the run: time limits chain.
- Crashes: the callable never raises for a cell's outcome; the driver resubmits a crashed cell
  (``max_retries``) and a job that died (node failure), and the resubmission resumes.
- ``-X cluster=local`` (submitit's LocalExecutor: one local process per job, requeue on SIGUSR2)
  and ``-X cluster=debug`` (DebugExecutor: in this process, one at a time) run the same code
  without a cluster; they are what the tests use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError
from lossbench.executors import CellTask, Executor, Outcome, run_argv


def _wait_exit(pid: int, grace: float) -> bool:
    """Wait until the child ``pid`` has exited, without reaping it (``Popen`` still does that)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.1)
    return False


class SlurmCell:
    """The job's callable: run one cell; on preemption stop it cleanly and requeue."""

    def __init__(self, task: CellTask) -> None:
        self.task = task
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"task": self.task}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.task, self._pid = state["task"], None

    def __call__(self) -> dict[str, Any]:
        def spawned(proc: Any) -> None:
            self._pid = proc.pid

        return run_argv(self.task, on_spawn=spawned).as_dict()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit in the signal handler (SIGUSR2): SIGTERM the cell, then requeue it."""
        import submitit

        pid = self._pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # the run is marked KILLED, its lock released
            if not _wait_exit(pid, grace=60):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        return submitit.helpers.DelayedSubmission(SlurmCell(self.task))


class _Job:
    def __init__(self, task: CellTask, job: Any) -> None:
        self.task, self.job, self.tries = task, job, 1
        self.cancelled = False


class SlurmExecutor(Executor):
    name = "slurm"
    queues = True

    def __init__(self, cluster: str = "slurm", partition: str | None = None, account: str | None = None,
                 qos: str | None = None, constraint: str | None = None, time_min: int = 1440,
                 gpus_per_node: int | None = None, cpus_per_task: int = 8, mem_gb: float | None = None,
                 max_retries: int = 2, max_num_timeout: int = 30, signal_delay_s: int = 120,
                 folder: str | None = None, multi_host: bool | None = None, shared_fs: bool = False,
                 jobs: int | None = None, work: Path | None = None, **context: Any) -> None:
        try:
            import submitit
        except ImportError:
            raise LossbenchError("the slurm executor needs submitit: pip install 'lossbench[slurm]'") from None
        if max_retries < 0 or time_min < 1 or cpus_per_task < 1:
            raise LossbenchError("-X max_retries must be >= 0, time_min and cpus_per_task >= 1")
        self.cluster = cluster
        self.jobs = jobs
        self.max_retries = max_retries
        self.shared_fs = shared_fs
        self.multi_host = (cluster == "slurm") if multi_host is None else multi_host
        self.folder = Path(folder) if folder else Path(work or ".") / "submitit"
        gpus = (1 if cluster == "slurm" else 0) if gpus_per_node is None else gpus_per_node
        self.gpus = gpus
        if cluster == "debug":
            self._executor = submitit.DebugExecutor(self.folder)
        else:
            self._executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster,
                                                   **{f"{cluster}_max_num_timeout": max_num_timeout})
            params: dict[str, Any] = {"timeout_min": time_min, "gpus_per_node": gpus, "cpus_per_task": cpus_per_task,
                                      "tasks_per_node": 1, "nodes": 1, "name": "lossbench"}
            if mem_gb is not None:
                params["mem_gb"] = mem_gb
            if cluster == "slurm":
                params["slurm_signal_delay_s"] = signal_delay_s
            for key, value in (("partition", partition), ("account", account), ("qos", qos),
                               ("constraint", constraint)):
                if value is not None:
                    if cluster != "slurm":
                        continue  # cluster options mean nothing to the local stand-ins
                    params[f"slurm_{key}"] = value
            try:
                self._executor.update_parameters(**params)
            except (ValueError, TypeError, NameError) as exc:
                raise LossbenchError(f"slurm executor: {' '.join(str(exc).split())}") from None

    def parallelism(self, pending: int) -> int:
        if self.cluster == "debug":
            return min(1, pending)
        return min(self.jobs or pending, pending)

    def processes_per_cell(self, nproc: int) -> None:
        if self.gpus and nproc > self.gpus and self.cluster != "debug":  # one GPU per DDP process of the job
            self.gpus = int(nproc)
            self._executor.update_parameters(gpus_per_node=self.gpus)

    def describe(self) -> str:
        return f"slurm ({self.cluster}; {self.gpus} GPU per cell; jobs in {self.folder})"

    def _submit(self, task: CellTask) -> Any:
        if self.cluster != "debug":
            self._executor.update_parameters(name=task.name)
        return self._executor.submit(SlurmCell(task))

    def submit(self, task: CellTask) -> _Job:
        return _Job(task, self._submit(task))

    def wait(self, handles: Sequence[_Job], timeout: float) -> list[tuple[_Job, Outcome]]:
        end = time.monotonic() + timeout
        while True:
            done = []
            for handle in handles:
                if self.cluster == "debug":
                    outcome = self._result(handle)  # DebugExecutor runs the job here, now
                elif handle.job.done():
                    outcome = self._result(handle)
                else:
                    continue
                if outcome is None:  # resubmitted
                    continue
                done.append((handle, outcome))
                if self.cluster == "debug":
                    break
            if done or time.monotonic() >= end:
                return done
            time.sleep(min(0.5, max(end - time.monotonic(), 0)))

    def _result(self, handle: _Job) -> Outcome | None:
        if handle.cancelled:
            return Outcome("cancelled", error="cancelled")
        try:
            outcome = Outcome(**handle.job.result())
        except Exception as exc:  # noqa: BLE001 - a job that died (node failure, timeouts exhausted, cancelled)
            text = str(exc).strip().splitlines()
            outcome = Outcome("failed", error=f"job {handle.job.job_id}: {text[-1] if text else type(exc).__name__}",
                              retryable=True)
        if outcome.retryable and handle.tries <= self.max_retries:
            handle.tries += 1
            handle.job = self._submit(handle.task)
            return None
        if outcome.retryable and self.max_retries:
            outcome.error = f"{outcome.error} — retries exhausted"[:500]
        return outcome

    def cancel(self, handles: Sequence[_Job]) -> None:
        for handle in handles:
            handle.cancelled = True
            with contextlib.suppress(Exception):
                handle.job.cancel(check=False)  # scancel: SIGTERM to the cell, its run marked KILLED

"""The ``local`` executor: each cell a ``lossbench run`` process on this machine, one GPU each.

``--jobs`` cells run at once (at most one per visible GPU where there are GPUs, each cell given
its own ``CUDA_VISIBLE_DEVICES``). A cell is not retried: a failed one is reported with its
re-run command, and running the matrix again resumes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError
from lossbench.executors import CellTask, Executor, Outcome, _this_attempt, cell_command, cell_env, classify


def gpu_slots() -> list[str]:
    """One entry per visible GPU (as CUDA_VISIBLE_DEVICES values); empty on a CPU machine."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch CUDA: CPU only
        return []


class _Running:
    def __init__(self, task: CellTask, process: subprocess.Popen, gpu: str | None) -> None:
        self.task, self.process, self.gpu = task, process, gpu
        self.started = time.monotonic()
        self.cancelled = False


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, jobs: int | None = None, **context: Any) -> None:
        self.jobs = jobs or 1
        self.gpus = gpu_slots()
        self.free = list(self.gpus)
        self.per_cell = 1

    def processes_per_cell(self, nproc: int) -> None:
        if self.gpus and nproc > len(self.gpus):
            raise LossbenchError(f"--nproc {nproc}: this machine has {len(self.gpus)} GPU(s) for the cells; "
                                 f"use --nproc {len(self.gpus)} or fewer")
        self.per_cell = max(1, int(nproc))

    def parallelism(self, pending: int) -> int:
        slots = min(self.jobs, len(self.gpus) // self.per_cell) if self.gpus else self.jobs
        return min(slots, pending)

    def describe(self) -> str:
        return f"local ({len(self.gpus)} GPUs)" if self.gpus else "local"

    def submit(self, task: CellTask) -> _Running:
        from lossbench.processes import spawn

        env = cell_env(task)
        gpu = None
        if self.gpus:
            taken, self.free = self.free[:self.per_cell], self.free[self.per_cell:]
            gpu = ",".join(taken)  # a DDP cell's processes: one GPU each
            env["CUDA_VISIBLE_DEVICES"] = gpu
        log = Path(task.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = spawn(cell_command(task.argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        return _Running(task, process, gpu)

    def wait(self, handles: Sequence[_Running], timeout: float) -> list[tuple[_Running, Outcome]]:
        end = time.monotonic() + timeout
        while True:
            done = []
            for handle in handles:
                code = handle.process.poll()
                if code is None:
                    continue
                if handle.gpu is not None:
                    self.free.extend(handle.gpu.split(","))
                    handle.gpu = None
                outcome = classify(code, _this_attempt(Path(handle.task.log)), cancelled=handle.cancelled)
                outcome.seconds = time.monotonic() - handle.started
                done.append((handle, outcome))
            if done or time.monotonic() >= end:
                return done
            time.sleep(min(0.2, max(end - time.monotonic(), 0)))

    def cancel(self, handles: Sequence[_Running]) -> None:
        from lossbench.tracking import stop_process_group

        for handle in handles:  # SIGTERM every cell first, then wait for each (SIGKILL after 10 s)
            handle.cancelled = True
            if handle.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(handle.process.pid, signal.SIGTERM)
        for handle in handles:
            stop_process_group(handle.process)

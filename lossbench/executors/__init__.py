"""Executors: where a matrix's cells run (local processes, a Ray cluster, Slurm through submitit).

The unit of work is the cell's ``lossbench run`` argv (:func:`lossbench.settings.cell_argv`):
nothing else is pickled or shipped, and the re-run command a user sees is exactly what ran.
Identity, skipping and resuming stay in lossbench — a cell that runs again continues its MLflow
run from its last checkpoint by itself — and the matrix reads every run id back from MLflow by
the cell's identity tag, never from what an executor returns.

An executor is a component of kind ``executor`` (``register_executors(register)``, listed by
``lossbench list executors``) whose factory returns an :class:`Executor`:

- ``submit(task) -> handle`` starts (or queues) one cell;
- ``wait(handles, timeout) -> [(handle, Outcome)]`` returns the cells that ended;
- ``cancel(handles)`` stops cells — SIGTERM first, so their runs are marked KILLED;
- ``close()`` releases what the executor started (a Ray instance, a job folder).

:func:`execute` drives any executor: ``limit`` cells at a time, and on an interruption it
cancels what is in flight. :func:`run_argv` is the one way a cell's process is started on the
host that runs it, whatever the executor; :func:`classify` decides what an ended process means:

- exit 0: ``finished``;
- exit 1 with an ``error:`` line that is not ``error: training failed: …``: a user error (a bad
  setting, missing data, a loss that became NaN): ``failed``, not retried — it would fail again;
- anything else (``error: training failed: …``, a Python crash, a signal such as the OOM
  killer's SIGKILL, a lost node): ``failed`` and *retryable*; Ray's ``max_retries`` and the Slurm
  executor's resubmission run the same argv again, which resumes the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError
from lossbench.paths import CHECKPOINTS_ENV

#: The prefix of ``lossbench run``'s message for an exception during training (retryable).
CRASH_PREFIX = "error: training failed:"
#: Written to a cell's log at the start of every attempt.
HEADER_PREFIX = "== lossbench executor:"
#: Followed by the process id of the cell's ``lossbench run`` (for a person, or a test, to find it).
PROCESS_PREFIX = "== cell process"
#: Environment variables a cell takes from the matrix to another host (besides LOSSBENCH_HOME).
FORWARDED_PREFIXES = ("LOSSBENCH_", "MLFLOW_")


class CellCrashed(Exception):
    """A cell's process crashed: retry it (Ray ``retry_exceptions``, Slurm resubmission)."""


@dataclasses.dataclass(frozen=True)
class CellTask:
    """One cell to run: its argv (``lossbench run …``), extra environment, log file and GPUs."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log: str
    gpus: float = 0.0


@dataclasses.dataclass
class Outcome:
    """How a cell's process ended. ``status``: finished | failed | preempted | cancelled."""

    status: str
    error: str = ""
    code: int | None = None
    retryable: bool = False
    host: str = ""
    attempt: int = 1
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Executor:
    """Base class of executors (see the module docstring); subclasses implement the four calls."""

    name = "executor"
    #: Cells may run on hosts other than this one: the store and the checkpoints must be shared.
    multi_host = False
    #: Cells wait in the executor's own queue after ``submit`` (printed as "submitted", not "running").
    queues = False

    def parallelism(self, pending: int) -> int:
        """How many of ``pending`` cells may run at once."""
        return pending

    def processes_per_cell(self, nproc: int) -> None:
        """The matrix's cells each run ``nproc`` DDP processes (``--nproc``): an executor that hands out
        GPUs gives each cell that many. Called once, before :meth:`parallelism`."""

    def describe(self) -> str:
        return self.name

    def submit(self, task: CellTask) -> Any:
        raise NotImplementedError

    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        raise NotImplementedError

    def cancel(self, handles: Sequence[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute(executor: Executor, tasks: Sequence[CellTask], *, limit: int,
            on_submit: Callable[[CellTask], None] | None = None, poll: float = 0.5) -> Iterator[tuple[CellTask, Outcome]]:
    """Run ``tasks`` on ``executor``, at most ``limit`` in flight; yields each as it ends.

    If the caller stops iterating or an exception (Ctrl-C, SIGTERM) interrupts it, the cells in
    flight are cancelled and waited for (their runs end KILLED), then it re-raises.
    """
    queue = list(tasks)
    running: dict[Any, CellTask] = {}
    try:
        while queue or running:
            while queue and len(running) < max(limit, 1):
                task = queue.pop(0)
                running[executor.submit(task)] = task
                if on_submit:
                    on_submit(task)
            for handle, outcome in executor.wait(list(running), timeout=poll):
                yield running.pop(handle), outcome
    finally:
        if running:
            executor.cancel(list(running))
            deadline = time.monotonic() + 60
            while running and time.monotonic() < deadline:
                for handle, _ in executor.wait(list(running), timeout=poll):
                    running.pop(handle, None)


# -- running one cell's argv on the host that runs it -------------------------------------------
def cell_env(task: CellTask) -> dict[str, str]:
    """This host's environment with the task's variables; no LOSSBENCH_DEBUG (errors stay one line)."""
    env = {k: v for k, v in os.environ.items() if k != "LOSSBENCH_DEBUG"}
    env.update(task.env)
    return env


def cell_command(argv: Sequence[str]) -> list[str]:
    """``lossbench run …`` as this host's Python runs it (the printed argv starts with ``lossbench``)."""
    return [sys.executable, "-m", "lossbench", *list(argv)[1:]]


def attempts_in(log: Path) -> int:
    try:
        with open(log, "rb") as handle:
            return sum(line.startswith(HEADER_PREFIX.encode()) for line in handle)
    except OSError:
        return 0


def _this_attempt(log: Path) -> list[str]:
    """The log lines written since the last attempt header."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if line.startswith(HEADER_PREFIX)]
    return lines[starts[-1] + 1:] if starts else lines


def classify(code: int, lines: Sequence[str], *, cancelled: bool = False) -> Outcome:
    """What an ended ``lossbench run`` means (see the module docstring)."""
    text = [ln.strip() for ln in lines if ln.strip()]
    errors = [ln for ln in text if ln.startswith("error:")]
    last = (errors[-1] if errors else (text[-1] if text else ""))[:500]
    if code == 0:
        return Outcome("finished", code=code)
    if cancelled:
        return Outcome("cancelled", error="cancelled", code=code)
    if code == 1 and errors and not errors[-1].startswith(CRASH_PREFIX):
        return Outcome("failed", error=last, code=code)
    if code in (130, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM):
        return Outcome("preempted", error=last or f"stopped by a signal (exit code {code})", code=code, retryable=True)
    return Outcome("failed", error=last or f"exit code {code}", code=code, retryable=True)


def run_argv(task: CellTask, *, on_spawn: Callable[[subprocess.Popen], None] | None = None) -> Outcome:
    """Run the cell's argv here, appending to its log; stops it with SIGTERM if interrupted.

    The process dies with the calling thread (``PR_SET_PDEATHSIG``): a Ray worker or Slurm job
    that is killed takes its cell down, and the cell marks its run KILLED.
    """
    from lossbench.processes import spawn
    from lossbench.tracking import stop_process_group

    log = Path(task.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    attempt = attempts_in(log) + 1
    host = socket.gethostname()
    env = cell_env(task)
    start = time.monotonic()
    with open(log, "ab") as out:
        devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        out.write(f"{HEADER_PREFIX} {task.name} attempt {attempt} on {host}, pid {os.getpid()}, "
                  f"CUDA_VISIBLE_DEVICES={devices if devices is not None else '(unset)'}\n".encode())
        out.flush()
        proc = spawn(cell_command(task.argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        out.write(f"{PROCESS_PREFIX} {proc.pid}\n".encode())
        out.flush()
    if on_spawn is not None:
        on_spawn(proc)
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        stop_process_group(proc)  # SIGTERM: the run is marked KILLED, its lock released
        raise
    outcome = classify(code, _this_attempt(log))
    outcome.host, outcome.attempt, outcome.seconds = host, attempt, time.monotonic() - start
    return outcome


# -- building an executor and checking it can work -------------------------------------------------
def forwarded_env(home: Path) -> dict[str, str]:
    """The environment a cell takes along to another host: lossbench's and MLflow's variables."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    env.pop("LOSSBENCH_DEBUG", None)
    env["LOSSBENCH_HOME"] = str(home)
    return env


def build_executor(reg: Any, name: str | None, options: Sequence[str], **context: Any) -> Executor:
    """The executor ``name`` (default ``local``) with ``-X key=value`` ``options``.

    ``context`` carries what the matrix knows (``jobs``, ``work``); each factory takes what it uses.
    ``local`` also works when the executors plugin is blocked (it is part of the core).
    """
    from lossbench.config import parse_assignments

    items = parse_assignments(options, "-X")
    name = name or "local"
    if name == "local" and "local" not in reg.names("executor"):
        from lossbench.executors.local import LocalExecutor

        if items:
            raise LossbenchError(f"the local executor takes no -X options, got {', '.join(items)}")
        return LocalExecutor(**context)
    component = reg.get("executor", name)
    return component.build(items, **context)


def _loopback(uri: str) -> bool:
    import urllib.parse

    host = (urllib.parse.urlsplit(uri).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def preflight(executor: Executor, *, tracking_uri: str, artifact_location: str | None, shared_fs: bool = False) -> None:
    """Refuse, before anything runs, a store the cells could not reach from other hosts.

    Only for executors whose cells may run elsewhere (``multi_host``): the tracking store must be
    a tracking server other hosts can reach (not SQLite, not a ``file://`` store, not 127.0.0.1),
    artifacts must go through it (``lossbench server --serve-artifacts``) or to a shared folder
    (``-X shared_fs=true``), and checkpoints must be in a folder every host sees
    (``LOSSBENCH_CHECKPOINTS``) so that a retry on another node resumes instead of restarting.
    """
    if not executor.multi_host:
        return
    where = f"the {executor.name} executor may run cells on other hosts"
    if not tracking_uri.startswith(("http://", "https://")):
        raise LossbenchError(
            f"{where}, which cannot share the store {tracking_uri.split('?')[0]!r}: start a tracking server they can "
            "reach (`lossbench server --host 0.0.0.0 --store postgresql+psycopg2://… --serve-artifacts`) and pass "
            "--tracking-uri http://<this host>:<port>")
    if _loopback(tracking_uri):
        raise LossbenchError(f"{where}, which cannot reach the tracking server at 127.0.0.1/localhost: give its "
                             "network address in --tracking-uri (`lossbench server --host 0.0.0.0`)")
    import urllib.parse

    scheme = urllib.parse.urlsplit(artifact_location or "").scheme
    local_artifacts = artifact_location is not None and (scheme in ("", "file") or len(scheme) == 1)
    if local_artifacts and not shared_fs:
        raise LossbenchError(
            f"{where}, but the experiment stores artifacts in {artifact_location}, a folder of one host: serve them "
            "through the tracking server (`lossbench server --serve-artifacts`, for a new experiment), or pass "
            "-X shared_fs=true if that folder is mounted on every host")
    if not os.environ.get(CHECKPOINTS_ENV) and not shared_fs:
        raise LossbenchError(
            f"{where}: set {CHECKPOINTS_ENV} to a folder every host mounts, so that a retried cell resumes from its "
            "checkpoint on any node (or -X shared_fs=true if LOSSBENCH_HOME is shared)")

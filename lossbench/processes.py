"""Child processes that die with their parent, and servers a re-run can find and stop.

Every long-lived child lossbench starts (a matrix's ``lossbench run`` cells, an ``mlflow
server``) is started by :func:`spawn`: in its own session (so it can be stopped as a group by
its process id) and with ``PR_SET_PDEATHSIG`` = SIGTERM, so that the kernel terminates it when
the process that started it dies — even by ``kill -9``, which runs no ``finally``. SIGTERM, not
SIGKILL: a ``lossbench run`` marks its MLflow run KILLED and releases its lock on SIGTERM, and
``mlflow server`` forwards it to its workers.

A server also gets a *record* (:func:`write_record`): a small JSON file with its process id,
port and command line. A later run that finds the record of a server still alive (same process
id *and* the same command line, so a reused process id is never taken for it) stops it before
starting its own (:func:`stop_recorded`). Nothing is ever looked up or killed by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to ask
        return None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux only).

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends: call :func:`spawn`
    from a thread that lives as long as the child should (the main thread, a Ray task, a job).
    Returns None where prctl does not exist (macOS): the child then outlives a killed parent,
    and only the server records catch it.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def spawn(args: Sequence[str], *, env: Mapping[str, str] | None = None, stdout: Any = None,
          stderr: Any = None, cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``args`` in a new session, terminated (SIGTERM) when this process dies."""
    return subprocess.Popen(list(args), env=dict(env) if env is not None else None, stdout=stdout, stderr=stderr,
                            cwd=cwd, start_new_session=True, preexec_fn=die_with_parent())


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _exec_cmdline(proc: subprocess.Popen, timeout: float = 5.0) -> list[str] | None:
    """The child's command line once it has exec'd its program: between fork and exec the kernel
    still shows the parent's, which would never match again later."""
    parent = _cmdline(os.getpid())
    deadline = time.monotonic() + timeout
    while True:
        current = _cmdline(proc.pid)
        if current and current != parent or proc.poll() is not None or time.monotonic() > deadline:
            return current
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads, wait up to ``grace`` s, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def write_record(path: Path, proc: subprocess.Popen, **info: Any) -> None:
    """Record a started server: process id, host, its command line as the kernel shows it (read right
    after the start) and ``info`` such as the port."""
    from lossbench.fsio import atomic_write

    record = {"pid": proc.pid, "host": socket.gethostname(), "cmdline": _exec_cmdline(proc),
              "started": time.time(), **info}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2))


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def stop_recorded(path: Path) -> dict[str, Any] | None:
    """Stop the server recorded at ``path`` if it is still running here; remove the record.

    The process is stopped only if it runs on this host with exactly the recorded command line
    (a process id reused by another program is left alone). Returns the record of a server it
    stopped, else None.
    """
    record = read_record(path)
    if record is None:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    stopped = None
    pid = record["pid"]
    if record.get("host") == socket.gethostname() and record.get("cmdline") and _cmdline(pid) == record["cmdline"]:
        stop_group(pid)
        stopped = record
    with contextlib.suppress(OSError):
        path.unlink()
    return stopped


# -- interrupts held off while a store is written -----------------------------------------------------
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
_deferring = False


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while the block runs; deliver them when it ends.

    ``lossbench run`` turns both into a KeyboardInterrupt, and its handler marks the MLflow run
    KILLED. Raised in the middle of an MLflow call, the interrupt leaves the SQLite store's
    connection inside its transaction, still holding the database's lock, so that marking the run
    KILLED fails with "database is locked" (measured: about one interrupt in ten that lands in a
    ``log_batch``). Inside this block a signal is only recorded; when the block ends the handlers
    are put back and the first recorded signal's handler runs (it raises KeyboardInterrupt there).

    Only Python handlers are deferred (a signal left to the system's default or ignored is not
    touched), only in the main thread (where Python runs handlers), and nested blocks defer once.
    It also serves as a decorator (``@deferred_interrupts()``).
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved = {sig: signal.getsignal(sig) for sig in _INTERRUPTS}

    def record(signum: int, frame: object) -> None:
        held.append(signum)

    _deferring = True
    try:
        for sig, handler in saved.items():
            if callable(handler):
                signal.signal(sig, record)
        yield
    finally:
        for sig, handler in saved.items():
            if callable(handler):
                signal.signal(sig, handler)
        _deferring = False
        if held:
            saved[held[0]](held[0], None)

"""Pieces shared by ``lossbench run`` and ``lossbench matrix``: settings, progress, summary."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any

#: glibc allocator settings for training (benchmarks/RESULTS.md, "Allocator"): large tensors are
#: taken from and kept in the heap instead of being mmapped and unmapped at every step.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 * 2**30), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}
MALLOC_SWITCH = "LOSSBENCH_MALLOC"  # "0" turns the tuning off


def tune_malloc() -> str:
    """Re-execute the command once with :data:`MALLOC_ENV` set (it only acts at process start).

    Returns a note for the run's params: ``"tuned"``, ``"off"`` or ``"preset by the user"``.
    """
    if os.environ.get(MALLOC_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return "off"
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return "tuned"
    if any(k in os.environ for k in MALLOC_ENV):
        return "preset by the user"
    env = {**os.environ, **MALLOC_ENV}
    script = sys.argv[0]
    if not script or not os.path.exists(script):
        return "off"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)


class _SurvivingStream:
    """A text stream that a closed reader cannot break: ``lossbench run … | head`` or a closed
    terminal turns further output into nothing instead of a BrokenPipeError that fails the run."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lost = False

    def _lose(self) -> None:
        # point the file descriptor at /dev/null too: Python's own flush at exit must not fail either
        self._lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        if not self._lost:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ConnectionResetError, OSError, ValueError):
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self._lost:
            try:
                self._stream.flush()
            except (BrokenPipeError, ConnectionResetError, OSError, ValueError):
                self._lose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_lost_terminal() -> None:
    """Training goes on when its output has nowhere to go: stdout and stderr survive a closed
    reader, and when started from a terminal a hang-up (SIGHUP: the terminal was closed) is
    ignored, as under ``nohup``."""
    import signal

    on_terminal = False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _SurvivingStream):
            with contextlib.suppress(Exception):
                on_terminal = on_terminal or stream.isatty()
            setattr(sys, name, _SurvivingStream(stream))
    if on_terminal and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def progress_bar(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def print_result(console: Any, result: Any) -> None:
    """Print a :class:`lossbench.api.RunResult` (best epoch counted from 1)."""
    from rich.table import Table

    table = Table(title=f"{result.cell} ({result.status})", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    s = result.summary
    rows = [
        ("MLflow run", result.run_id),
        ("experiment", result.experiment),
        ("tracking store", result.tracking_uri),
        ("best epoch (validation Dice)", f"{result.best_epoch} ({_fmt(result.best_val_dice)})"),
        ("test Dice, per-case mean / pooled", f"{_fmt(s.get('test_dice_mean', float('nan')))} / "
                                              f"{_fmt(s.get('test_dice_pooled', float('nan')))}"),
        ("test F1 (SUVmax criterion), pooled", _fmt(s.get("test_f1_pooled", float("nan")))),
        ("test sensitivity, pooled", _fmt(s.get("test_sensitivity_pooled", float("nan")))),
        ("test FP lesions, total", _fmt(s.get("test_fp_pooled", float("nan")))),
        ("where to look", result.run_url),
    ]
    if result.resumed_after_epoch is not None:
        rows.insert(1, ("resumed after epoch", str(result.resumed_after_epoch)))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)


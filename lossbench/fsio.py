"""Writing files so that a crash never leaves a half-written result: a temporary name, then a rename.

One helper for every writer of lossbench (datasets, checkpoints, evaluation tables, the compare
report, the psma validation memo). The temporary file sits beside its target (same filesystem,
so the rename is atomic) with a name starting with ``.`` and ending with ``.tmp``; it is removed
on every failure path, including an exception raised by the code that fills it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["TMP_SUFFIX", "atomic_folder", "atomic_path", "atomic_paths", "atomic_write", "remove_stale_temps"]

TMP_SUFFIX = ".tmp"


def _temp_beside(path: Path) -> Path:
    """A unique name beside ``path`` (same filesystem, so the rename is atomic). The file is not
    created here: the writer creates it, so it gets the usual permissions (umask), unlike mkstemp's 0600."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"


def _fsync(path: Path) -> None:
    """Flush a written file to disk before it is renamed into place (durable across a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[Path | str]) -> Iterator[list[Path]]:
    """Yield one temporary path per target; when the block succeeds, rename each over its target.

    All temporaries are written before any target is replaced, so a failure while writing leaves
    every target as it was. On any failure the temporaries are removed.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(_temp_beside(target))
        yield list(temps)
        for tmp in temps:
            if not tmp.exists():
                raise FileNotFoundError(f"nothing was written to {tmp}")
            _fsync(tmp)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` when the block succeeds."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def atomic_write(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def remove_stale_temps(folder: Path | str, name: str) -> int:
    """Remove temporaries of ``name`` left in ``folder`` by a process that was killed mid-write."""
    removed = 0
    for leftover in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_folder(out: Path, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out``; on success it replaces ``out`` in one rename.

    A previous ``out`` is moved aside first and restored if the final rename fails; on any failure
    the temporary folder is removed, so ``out`` is either the old folder or the complete new one.
    ``check(out)`` (may ``out`` be replaced?) runs before and again just before the rename.
    """
    out = Path(out)
    if check is not None:
        check(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if check is not None:
            check(out)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

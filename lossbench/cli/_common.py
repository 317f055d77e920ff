"""Helpers shared by the CLI commands: consoles, the registry, one-line errors."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

    from lossbench.plugin_manager import PluginManager
    from lossbench.registry import Registry

DEBUG_ENV = "LOSSBENCH_DEBUG"


def console() -> Console:
    from rich.console import Console

    return Console()


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit ``code`` (credentials masked)."""
    from lossbench.tracking import redact

    line = " ".join(redact(str(message)).split())
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@functools.cache
def plugin_manager() -> PluginManager:
    """The CLI process's plugin manager (plugins are discovered once per process)."""
    from lossbench.plugin_manager import create_plugin_manager

    return create_plugin_manager()


def registry() -> Registry:
    from lossbench.registry import Registry

    return Registry(plugin_manager())


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become ``null``, paths strings, tuples lists,
    numpy scalars Python numbers (``--json`` output is strict JSON that any parser reads)."""
    import dataclasses
    import math
    from pathlib import PurePath

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def print_json(document: Any, stream: Any = None) -> None:
    """Print one JSON document (and a newline) on stdout, or on ``stream``."""
    import json

    stream = stream if stream is not None else sys.stdout
    stream.write(json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n")
    stream.flush()


@contextlib.contextmanager
def json_mode(enabled: bool) -> Iterator[Any]:
    """With ``--json``, everything a command prints while it works (progress, tables, notes, a
    library's chatter) goes to stderr, so that stdout carries the JSON document alone. Yields the
    real stdout to give :func:`print_json`."""
    real = sys.stdout
    if not enabled:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real

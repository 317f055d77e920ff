"""Helpers shared by the CLI commands: consoles, the registry, one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, NoReturn

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


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit 1 (credentials masked)."""
    from lossbench.tracking import redact

    line = " ".join(redact(str(message)).split())
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    raise SystemExit(1)


@functools.cache
def plugin_manager() -> PluginManager:
    """The CLI process's plugin manager (plugins are discovered once per process)."""
    from lossbench.plugin_manager import create_plugin_manager

    return create_plugin_manager()


def registry() -> Registry:
    from lossbench.registry import Registry

    return Registry(plugin_manager())

"""Where lossbench keeps its local state.

Everything lives under one folder, ``$LOSSBENCH_HOME`` (default: ``./lossbench-data`` in the
current directory, like MLflow's own ``./mlruns`` default):

- ``mlflow.db``      the embedded MLflow tracking store (SQLite),
- ``mlartifacts/``   MLflow artifacts (checkpoints, per-case tables, reports),
- ``cache/``         generated data, e.g. the default synthetic PSMA cohort,
- ``checkpoints/``   resumable training state of running cells (or ``$LOSSBENCH_CHECKPOINTS``).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LOSSBENCH_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or "lossbench-data").expanduser().resolve()


def ensure_home() -> Path:
    """Create ``$LOSSBENCH_HOME`` if needed; a one-line error if it cannot be a folder."""
    from lossbench.errors import LossbenchError

    folder = home()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise LossbenchError(f"{HOME_ENV} {folder} cannot be a folder: it, or a folder above it, is a file; "
                             f"point {HOME_ENV} at a folder") from None
    except OSError as exc:
        raise LossbenchError(f"cannot create {HOME_ENV} {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise LossbenchError(f"{HOME_ENV} {folder} is not a folder; point {HOME_ENV} at a folder")
    return folder


def cache_dir() -> Path:
    return home() / "cache"


CHECKPOINTS_ENV = "LOSSBENCH_CHECKPOINTS"


def checkpoints_dir() -> Path:
    """``$LOSSBENCH_CHECKPOINTS`` if set (a folder every node mounts, for cells that may resume
    on another host), else ``$LOSSBENCH_HOME/checkpoints``."""
    shared = os.environ.get(CHECKPOINTS_ENV)
    return Path(shared).expanduser().resolve() if shared else home() / "checkpoints"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return home() / "mlartifacts"

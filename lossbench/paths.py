"""Where lossbench keeps its local state.

Everything lives under one folder, ``$LOSSBENCH_HOME`` (default: ``./lossbench-data`` in the
current directory, like MLflow's own ``./mlruns`` default):

- ``mlflow.db``      the embedded MLflow tracking store (SQLite),
- ``mlartifacts/``   MLflow artifacts (checkpoints, per-case tables, reports),
- ``cache/``         generated data, e.g. the default synthetic PSMA cohort,
- ``checkpoints/``   resumable training state of running cells.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LOSSBENCH_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or "lossbench-data").expanduser().resolve()


def cache_dir() -> Path:
    return home() / "cache"


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return home() / "mlartifacts"

"""Shared fixtures: the real ``lossbench`` executable, run in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the property tests with a fixed seed so a landing does not hinge on a lucky draw;
# locally they explore new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Example plugin distributions are installed by tests, not collected as our tests.
collect_ignore = ["plugin_dists"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own LOSSBENCH_HOME: nothing lands in ./lossbench-data, no cache is shared."""
    monkeypatch.setenv("LOSSBENCH_HOME", str(tmp_path / "lossbench-home"))
    # No store or experiment from outside, and none left behind: mlflow.set_tracking_uri() (MLflow 3)
    # also sets MLFLOW_TRACKING_URI in os.environ, which every later `lossbench` subprocess of this
    # worker would honour. setenv then delenv: the variable is unset now and unset again afterwards.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def lossbench_executable() -> str:
    beside = Path(sys.executable).with_name("lossbench")
    found = str(beside) if beside.exists() else shutil.which("lossbench")
    if not found:
        pytest.fail("the lossbench console script is not installed: run pip install -e '.[dev]'")
    return found


def wait_until(ready, *, what: str, process: subprocess.Popen | None = None, timeout: float = 300, poll: float = 0.2):
    """Poll ``ready()`` until it returns something truthy, and return that.

    Fails clearly if ``process`` exits first, or after ``timeout`` seconds — a guard against a hang
    that would otherwise stall the suite, not a check of speed.
    """
    end = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited with code {process.returncode} before {what}")
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s (hang guard)")
        time.sleep(poll)


@pytest.fixture
def run_cli(tmp_path):
    """Run the real ``lossbench`` executable; returns the CompletedProcess (text mode)."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
        full_env = {**os.environ, "LOSSBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
        full_env.pop("LOSSBENCH_DEBUG", None)
        full_env.update(env or {})
        return subprocess.run(
            [lossbench_executable(), *args],
            capture_output=True, text=True, env=full_env, cwd=cwd or tmp_path, timeout=timeout,
        )

    return run

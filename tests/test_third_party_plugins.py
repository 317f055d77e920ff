"""Third-party plugins installed as real distributions, found through entry points.

Each example under tests/plugin_dists/ is pip-installed (no dependencies, no build isolation)
into its own target folder; the real ``lossbench`` executable then runs with that folder on
PYTHONPATH, so discovery goes through importlib.metadata exactly as after ``pip install``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DISTS = Path(__file__).parent / "plugin_dists"


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """name -> folder holding the installed distribution."""
    out = {}
    for name in ("lossbench-focal-tversky", "lossbench-broken", "lossbench-dupe"):
        target = tmp_path_factory.mktemp(name)
        source = tmp_path_factory.mktemp("src") / name  # pip builds in place: keep the tree clean
        shutil.copytree(DISTS / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--target", str(target), str(source)],
            check=True, capture_output=True, text=True,
        )
        assert list(target.glob("*.dist-info/entry_points.txt")), f"{name}: no entry points installed"
        out[name] = target
    return out


def with_path(*folders: Path, **extra: str) -> dict[str, str]:
    paths = [str(f) for f in folders] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(paths), **extra}


def test_third_party_loss_is_listed_with_its_distribution(installed, run_cli):
    result = run_cli("list", "losses", env=with_path(installed["lossbench-focal-tversky"]))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "focal_tversky" in line)
    assert "lossbench-focal-tversky 0.2.0" in row
    for builtin in ("l1dfl", "dl", "dfl", "dce"):
        assert builtin in result.stdout


def test_third_party_loss_shows_and_checks(installed, run_cli):
    env = with_path(installed["lossbench-focal-tversky"])
    shown = run_cli("show", "loss", "focal_tversky", env=env)
    assert shown.returncode == 0 and "Abraham" in shown.stdout and "alpha" in shown.stdout
    checked = run_cli("check", "loss", "focal_tversky", "-p", "gamma=1", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "6 passed, 0 failed" in checked.stdout


def test_third_party_plugin_passes_contract_suite_with_its_own_tests(installed):
    """The plugin's own tests subclass lossbench.testing.LossContract (contract checks and a table of
    hand-computed cases) and use the fixtures of lossbench's pytest plugin, with no conftest."""
    plugin_dir = DISTS / "lossbench-focal-tversky"
    env = {**os.environ, **with_path(installed["lossbench-focal-tversky"])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
         "-W", "error::pytest.PytestDeprecationWarning", str(plugin_dir / "tests")],
        capture_output=True, text=True, env=env, cwd=plugin_dir, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # 2 classes x 6 contract checks, 2 x 2 hand-computed cases, 4 fixture tests; nothing skipped
    assert "20 passed" in result.stdout and "skipped" not in result.stdout
    # the pytest plugin's header names the third-party plugin and its distribution
    assert "focal_tversky (lossbench-focal-tversky 0.2.0)" in result.stdout


def test_plugin_cases_table_is_collected_by_id(installed):
    plugin_dir = DISTS / "lossbench-focal-tversky"
    env = {**os.environ, **with_path(installed["lossbench-focal-tversky"])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         str(plugin_dir / "tests" / "test_contract.py")],
        capture_output=True, text=True, env=env, cwd=plugin_dir, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for test_id in ("TestFocalTversky::test_loss_case[half]", "TestFocalTversky::test_loss_case[right]",
                    "TestFocalTverskyNoFocus::test_loss_case[case0]", "TestFocalTverskyNoFocus::test_loss_case[case1]"):
        assert test_id in result.stdout


def test_broken_plugin_is_reported_and_others_load(installed, run_cli):
    env = with_path(installed["lossbench-broken"], installed["lossbench-focal-tversky"])
    listed = run_cli("list", "losses", env=env)
    assert listed.returncode == 0
    assert "focal_tversky" in listed.stdout and "l1dfl" in listed.stdout
    assert "plugin 'broken' (lossbench-broken) failed" in listed.stderr
    plugins = json.loads(run_cli("plugins", "--json", env=env).stdout)
    broken = next(p for p in plugins if p["name"] == "broken")
    assert broken["status"] == "failed" and broken["distribution"] == "lossbench-broken"
    assert "lossbench_dependency_that_is_not_installed" in broken["error"]


def test_duplicate_plugin_is_an_error_naming_both(installed, run_cli):
    env = with_path(installed["lossbench-dupe"])
    listed = run_cli("list", "losses", env=env)
    assert listed.returncode == 1
    assert "'dl' is registered by plugin monai (lossbench 0.1.0) and by plugin dupe (lossbench-dupe 1.0.0)" \
        in " ".join(listed.stderr.split())
    shown = run_cli("show", "loss", "dl", env=env)
    assert shown.returncode == 1 and shown.stderr.count("\n") == 1 and "dupe" in shown.stderr
    # the rest still works, and blocking one of the two resolves the conflict
    assert run_cli("show", "loss", "l1dfl", env=env).returncode == 0
    blocked = run_cli("list", "losses", env={**env, "LOSSBENCH_DISABLE_PLUGINS": "dupe"})
    assert blocked.returncode == 0 and "monai" in blocked.stdout


def test_only_switch_limits_discovery(installed, run_cli):
    env = with_path(installed["lossbench-focal-tversky"], LOSSBENCH_PLUGINS="focal_tversky")
    listed = run_cli("list", "losses", env=env)
    assert listed.returncode == 0
    assert "focal_tversky" in listed.stdout and "l1dfl" not in listed.stdout

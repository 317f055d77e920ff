"""Third-party plugins installed as real distributions, found through entry points.

Each example under tests/plugin_dists/ is pip-installed (no dependencies, no build isolation)
into its own target folder; the real ``lossbench`` executable then runs with that folder on
PYTHONPATH, so discovery goes through importlib.metadata exactly as after ``pip install``.
"""

from __future__ import annotations

import json
import re
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


# -- CONTRIBUTING.md, followed as a newcomer would ----------------------------------------------

GUIDE = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def guide_files() -> dict[str, str]:
    """The guide's files: its code blocks titled with a path (```python title="tests/x.py")."""
    return dict(re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', GUIDE.read_text(), re.S))


def guide_output(command: str) -> list[str]:
    """The output the guide shows for ``command``: the ```text block right after the ```bash block
    that ends with it."""
    block = r"```bash\n(?:(?!```)[^\n]*\n)*?" + re.escape(command) + r"\n```\n```text\n(.*?)```"
    found = re.search(block, GUIDE.read_text(), re.S)
    assert found, f"CONTRIBUTING.md shows no output for {command!r}"
    return found.group(1).splitlines()


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("│").split("│")]


@pytest.fixture(scope="module")
def guide_plugin(tmp_path_factory):
    """CONTRIBUTING.md's plugin, its files copied out of the guide and installed (no network)."""
    files = guide_files()
    assert set(files) == {"pyproject.toml", "lossbench_tversky/__init__.py", "lossbench_tversky/loss.py",
                          "tests/test_tversky.py"}
    source = tmp_path_factory.mktemp("guide") / "lossbench-tversky"
    for path, text in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    target = tmp_path_factory.mktemp("guide-target")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    shutil.rmtree(source / "build", ignore_errors=True)
    return source, target


@pytest.mark.parametrize("command", [
    "lossbench show loss tversky",
    "lossbench check loss tversky",
    "lossbench check loss tversky -p alpha=0.5 -p beta=0.5",
])
def test_guide_outputs_are_what_the_commands_print(guide_plugin, run_cli, command):
    _, target = guide_plugin
    result = run_cli(*command.split()[1:], env=with_path(target, COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    assert [line.rstrip() for line in result.stdout.splitlines()] == guide_output(command)


@pytest.mark.parametrize("command", ["lossbench plugins", "lossbench list losses"])
def test_guide_tables_show_the_plugin_row(guide_plugin, run_cli, command):
    """The built-ins' rows belong to lossbench (and may change); the plugin's row is the guide's."""
    _, target = guide_plugin
    result = run_cli(*command.split()[1:], env=with_path(target, COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    expected = next(line for line in guide_output(command) if line.startswith("│ tversky"))
    actual = next(line for line in result.stdout.splitlines() if line.startswith("│ tversky"))
    if command == "lossbench list losses":  # the summary column wraps with the other rows' widths
        assert cells(actual)[::2] == cells(expected)[::2] == ["tversky", "tversky"]
        assert cells(actual)[-1] == cells(expected)[-1] == "lossbench-tversky 0.1.0"
    else:
        assert cells(actual) == cells(expected)


def test_guide_plugin_passes_its_own_tests_and_doctest(guide_plugin):
    source, target = guide_plugin
    env = {**os.environ, **with_path(target)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error::pytest.PytestDeprecationWarning",
         str(source / "tests")],
        capture_output=True, text=True, env=env, cwd=source, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    shown = guide_output("python -m pytest")
    assert next(line for line in shown if line.startswith("lossbench ")) in tests.stdout.splitlines()
    assert shown[-1].split(" passed")[0] == tests.stdout.splitlines()[-1].split(" passed")[0]  # "=== 10"
    doctest = subprocess.run([sys.executable, "-m", "doctest", str(source / "lossbench_tversky" / "loss.py")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert doctest.returncode == 0, doctest.stdout


def test_guide_plugin_is_held_to_the_project_contract_suite(guide_plugin):
    """The guide says lossbench's own contract tests pick the new loss up: they do."""
    _, target = guide_plugin
    env = {**os.environ, **with_path(target)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "tversky",
         str(Path(__file__).parent / "losses" / "test_contract.py")],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 passed" in result.stdout

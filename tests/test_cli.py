"""The real ``lossbench`` executable: start-up cost, listings, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IMPORT_PROBE = """
import sys
from lossbench.cli.app import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = [m for m in ("torch", "monai", "mlflow", "numpy", "pandas") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["plugins"], ["show", "loss", "l1dfl"]])
def test_startup_does_not_import_heavy_packages(args):
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(args=args)], capture_output=True, text=True)
    assert "HEAVY=\n" in out.stdout or out.stdout.strip().endswith("HEAVY="), out.stdout + out.stderr


def test_help_lists_commands(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("list", "plugins", "show", "check"):
        assert command in result.stdout


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("lossbench ")


def test_list_losses_shows_builtins_with_plugins(run_cli):
    result = run_cli("list", "losses")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
    assert rows["l1dfl"].count("l1dfl") >= 2 and "lossbench 0.1.0" in rows["l1dfl"]
    for name in ("dl", "dfl", "dce"):
        assert "monai" in rows[name]


def test_plugins_json(run_cli):
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json").stdout)}
    assert plugins["l1dfl"]["status"] == "loaded" and "loss:l1dfl" in plugins["l1dfl"]["components"]
    assert {"loss:dl", "loss:dfl", "loss:dce"} <= set(plugins["monai"]["components"])


def test_show_loss_has_formula_params_citation(run_cli):
    result = run_cli("show", "loss", "dfl")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "sigmoid" in text and "softmax" in text and "gamma" in text and "Lin TY" in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["show", "loss", "l1dlf"], "did you mean 'l1dfl'?"),
        (["check", "loss", "l1dfl", "-p", "epsilom=0.1"], "did you mean 'epsilon'?"),
        (["check", "loss", "dfl", "-p", "focal=tanh"], "not one of sigmoid, softmax"),
        (["check", "loss", "dfl", "-p", "gamma"], "name=value"),
    ],
)
def test_user_errors_are_one_line_exit_1(run_cli, args, fragment):
    result = run_cli(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, fragment, where",
    [
        (["list", "metrics"], "'metrics' is not one of", "lossbench list"),  # bad choice
        (["nosuchcommand"], "No such command", "lossbench"),
        (["show", "--bogus"], "No such option: --bogus", "lossbench show"),
        (["show", "loss"], "Missing argument", "lossbench show"),
        (["evaluate", "--gt", "x", "--pet", "y"], "Missing option '--pred'", "lossbench evaluate"),
    ],
)
def test_usage_errors_exit_2_as_in_click(run_cli, args, fragment, where):
    """Click's usage errors (unknown option/command, missing required option, bad choice) exit 2;
    the one-line format stays."""
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and f"(see '{where} --help')" in result.stderr


def test_list_and_show_json(run_cli):
    import json

    listed = run_cli("list", "losses", "--json")
    assert listed.returncode == 0, listed.stderr
    losses = json.loads(listed.stdout)["losses"]
    assert {"dl", "dfl", "l1dfl"} <= {c["name"] for c in losses} and all(c["plugin"] for c in losses)
    shown = run_cli("show", "loss", "dfl", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["name"] == "dfl" and "gamma" in {p["name"] for p in doc["params"]} and "Lin TY" in doc["citation"]


def test_shell_completion_is_offered(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0 and "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_debug_switch_shows_traceback(run_cli):
    result = run_cli("show", "loss", "nope", env={"LOSSBENCH_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_check_runs_contract_with_parameters(run_cli):
    result = run_cli("check", "loss", "l1dfl", "-p", "epsilon=0.1", "-p", "gamma=0")
    assert result.returncode == 0, result.stdout
    assert "6 passed, 0 failed" in result.stdout

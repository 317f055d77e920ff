"""The Typer application and the ``lossbench`` entry point.

Exit codes: 0 success; 1 user errors (:class:`lossbench.errors.LossbenchError`: bad values, missing
files, a failed run); 2 usage errors found by Click (unknown option or command, missing required
option, bad choice), as Click's own convention; 130 interrupted (Ctrl-C, SIGTERM). Errors are one
line on stderr; set ``LOSSBENCH_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import sys

import typer

try:  # Typer >= 0.2x vendors its own copy of Click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older Typer on top of Click
    from click import exceptions as _click_exc

from lossbench import __version__
from lossbench.cli import check, evaluate, listing, plugin_status, show
from lossbench.cli import compare as compare_cmd
from lossbench.cli import matrix as matrix_cmd
from lossbench.cli import predict as predict_cmd
from lossbench.cli import run as run_cmd
from lossbench.cli import server as server_cmd
from lossbench.cli import ui as ui_cmd
from lossbench.cli._common import debug, fail
from lossbench.cli.plugin_commands import PluginAwareGroup, add_plugin_commands, make_groups
from lossbench.errors import LossbenchError

app = typer.Typer(
    name="lossbench",
    help="Benchmark segmentation losses: plugins for losses, networks and datasets; "
    "runs logged to MLflow; stratified, corrected statistics.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=PluginAwareGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lossbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """lossbench: benchmark segmentation losses."""


app.command("list")(listing.list_components)
app.command("plugins")(plugin_status.plugins)
app.command("show")(show.show)
app.command("check")(check.check)
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(compare_cmd.compare)
_groups = make_groups(app)
app.command("run")(run_cmd.run)
app.command("matrix")(matrix_cmd.matrix)
app.command("predict")(predict_cmd.predict)
app.command("ui")(ui_cmd.ui)
app.command("server")(server_cmd.server)


_plugins_added = False


def _add_plugin_commands_once() -> None:
    global _plugins_added
    if not _plugins_added:
        _plugins_added = True
        add_plugin_commands(app, _groups)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        _add_plugin_commands_once()
        code = app(args=argv, prog_name="lossbench", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        code = 130
    except _click_exc.NoArgsIsHelpError:
        code = 0  # Typer has printed the help already
    except _click_exc.ClickException as exc:
        if debug():
            raise
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "lossbench"
        # usage errors (UsageError and its kinds) carry Click's exit code 2, other Click errors 1
        fail(f"{exc.format_message()} (see '{where} --help')", code=getattr(exc, "exit_code", 1) or 1)
    except LossbenchError as exc:
        if debug():
            raise
        fail(str(exc))
    sys.exit(code if isinstance(code, int) else 0)

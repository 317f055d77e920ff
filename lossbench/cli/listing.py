"""``lossbench list [losses|networks|datasets|executors]``."""

from __future__ import annotations

from enum import Enum

import typer

from lossbench.cli._common import console, err_console, print_json, registry
from lossbench.cli._options import Json


class KindChoice(str, Enum):
    losses = "losses"
    networks = "networks"
    datasets = "datasets"
    executors = "executors"


def list_components(
    kind: KindChoice | None = typer.Argument(None, help="What to list; all kinds when left out."),
    as_json: Json = False,
) -> None:
    """List registered components with the plugin and version that provide them."""
    from rich.table import Table

    reg = registry()
    kinds = [kind.value] if kind else [k.value for k in KindChoice]
    out = console()
    if as_json:  # {"losses": [{"name", "summary", "plugin", "distribution", "version"}, ...], ...}
        print_json({plural: [{"name": c.name, "summary": c.summary, "plugin": c.plugin,
                              "distribution": c.distribution, "version": c.version}
                             for c in reg.components(plural)] for plural in kinds})
    for plural in kinds if not as_json else ():
        table = Table(title=plural, title_justify="left")
        table.add_column("name", style="bold cyan")
        table.add_column("summary")
        table.add_column("plugin")
        table.add_column("distribution")
        for comp in reg.components(plural):
            table.add_row(comp.name, comp.summary, comp.plugin, f"{comp.distribution} {comp.version}")
        out.print(table)
    conflicts = [err for plural in kinds for err in reg.conflicts(plural)]
    failures = [info for info in reg.plugins() if info.status == "failed"]
    errors = err_console()
    for info in failures:
        errors.print(f"[yellow]warning:[/] plugin {info.name!r} ({info.distribution}) failed: {info.error}",
                     markup=True, highlight=False, soft_wrap=True)
    for err in conflicts:
        errors.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
    if conflicts:
        raise typer.Exit(1)

"""``lossbench show KIND NAME``: parameters, defaults, formula and citation."""

from __future__ import annotations

from enum import Enum

import typer

from lossbench.cli._common import console, print_json, registry
from lossbench.cli._options import Json


class Kind(str, Enum):
    loss = "loss"
    network = "network"
    dataset = "dataset"
    executor = "executor"


def show(
    kind: Kind = typer.Argument(..., help="loss, network, dataset or executor."),
    name: str = typer.Argument(..., help="Registry name, e.g. l1dfl."),
    as_json: Json = False,
) -> None:
    """Describe one component: summary, parameters with defaults, formula, citation, provider."""
    from rich.table import Table
    from rich.text import Text

    comp = registry().get(kind.value, name)
    if as_json:
        print_json({
            "kind": comp.kind, "name": comp.name, "summary": comp.summary, "description": comp.description,
            "formula": comp.formula, "citation": comp.citation, "plugin": comp.plugin, "provider": comp.provider,
            "distribution": comp.distribution, "version": comp.version,
            "params": [{"name": p.name, "type": p.type_name, "default": p.default, "help": p.help,
                        "choices": list(p.choices) if p.choices else None} for p in comp.params],
        })
        return
    out = console()
    out.print(Text(f"{comp.kind} {comp.name}", style="bold cyan"), Text(f" — {comp.summary}"))
    out.print(Text(f"provided by plugin {comp.provider}", style="dim"))
    if comp.description:
        out.print()
        out.print(Text(comp.description))
    if comp.formula:
        out.print()
        out.print(Text("formula", style="bold"))
        out.print(Text(comp.formula))
    out.print()
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "type", "default", "help"):
        table.add_column(col)
    for p in comp.params:
        default = ",".join(map(str, p.default)) if isinstance(p.default, tuple) else str(p.default)
        extra = f" (one of: {', '.join(map(str, p.choices))})" if p.choices else ""
        table.add_row(p.name, p.type_name, default, p.help + extra)
    if comp.params:
        out.print(table)
    else:
        out.print("parameters: none")
    if comp.citation:
        out.print()
        out.print(Text("citation", style="bold"))
        out.print(Text(comp.citation))

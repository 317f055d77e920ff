"""``lossbench plugins``: what was loaded, blocked or failed, and why."""

from __future__ import annotations

import json

import typer

from lossbench.cli._common import console, registry


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show every discovered plugin: distribution, version, state, components or error."""
    reg = registry()
    rows = []
    for info in reg.plugins():
        provided = [f"{c.kind}:{c.name}" for c in reg.provided_by(info.name)]
        rows.append({
            "name": info.name, "distribution": info.distribution, "version": info.version,
            "module": info.module, "status": info.status, "error": info.error, "components": provided,
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="plugins", title_justify="left")
    for col in ("name", "distribution", "status", "provides / error"):
        table.add_column(col)
    styles = {"loaded": "green", "failed": "red", "blocked": "yellow"}
    for row in rows:
        detail = ", ".join(row["components"]) if row["status"] == "loaded" else row["error"]
        table.add_row(row["name"], f"{row['distribution']} {row['version']}",
                      f"[{styles[row['status']]}]{row['status']}[/]", detail)
    out = console()
    out.print(table)
    for err in reg.conflicts():
        out.print(f"[red]conflict:[/] {err}", highlight=False, soft_wrap=True)

"""``lossbench check loss NAME``: run the loss contract suite on an installed loss."""

from __future__ import annotations

import typer

from lossbench.cli._common import console, registry


def check(
    kind: str = typer.Argument(..., metavar="loss", help="What to check (only 'loss' for now)."),
    name: str = typer.Argument(..., help="Registry name of the loss, e.g. l1dfl."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Loss parameter as name=value (repeatable), e.g. -p gamma=0."
    ),
) -> None:
    """Hold one loss, with the given parameters, to the same contract as the built-ins."""
    from lossbench.config import parse_assignments
    from lossbench.errors import LossbenchError

    if kind != "loss":
        raise LossbenchError(f"'lossbench check' checks losses only; got {kind!r}")
    component = registry().get("loss", name)
    overrides = parse_assignments(param, "--param")
    component.resolve(overrides)  # parameter errors surface before torch is imported

    from lossbench.testing.losses import run_loss_contract

    results = run_loss_contract(component, overrides)
    out = console()
    failed = 0
    for check_name, error in results:
        if error is None:
            out.print(f"[green]PASS[/] {check_name}", highlight=False)
        else:
            failed += 1
            out.print(f"[red]FAIL[/] {check_name}: {error}", highlight=False, soft_wrap=True)
    out.print(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)

"""Commands that plugins add through the ``register_commands(cli)`` hook.

The CLI creates the plugin manager once per process (:func:`lossbench.cli._common.plugin_manager`),
calls every plugin's ``register_commands`` with a :class:`Commands`, and only then parses the
command line. A command whose plugin is blocked or failed is not there; asking for it says so and
names the plugins that are not loaded, instead of Click's bare "No such command".
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.2x vendors its own copy of Click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older Typer on top of Click
    from click import exceptions as _click_exc

#: Groups the core CLI provides for plugins to fill (name -> help).
GROUPS = {"data": "Datasets: commands provided by dataset plugins (e.g. psma's `data synth`)."}


class PluginAwareGroup(TyperGroup):
    """A command group whose unknown-command error mentions plugins that are not loaded."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except _click_exc.UsageError as exc:
            name = args[0] if args else ""
            if not name or name.startswith("-") or self.get_command(ctx, name) is not None:
                raise
            from lossbench.cli._common import plugin_manager

            missing = [f"{i.name} ({i.error if i.status == 'blocked' else f'failed: {i.error}'})"
                       for i in plugin_manager().infos.values() if i.status != "loaded"]
            if missing:
                exc.message = (f"{exc.message.rstrip('.')}: `{ctx.command_path} {name}` is not available; it may "
                               f"come from a plugin that is not loaded: {', '.join(missing)}")
            raise


class Commands:
    """What ``register_commands`` receives: the root application and its command groups."""

    def __init__(self, app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
        self.app = app
        self._groups = groups

    def group(self, name: str) -> typer.Typer:
        """The sub-command group ``lossbench <name>`` (one of :data:`GROUPS`)."""
        if name not in self._groups:
            raise KeyError(f"lossbench has no command group {name!r}; groups: {', '.join(self._groups)}")
        return self._groups[name]


def make_groups(app: typer.Typer) -> dict[str, typer.Typer]:
    """Create and attach the groups of :data:`GROUPS` to ``app``."""
    groups = {}
    for name, help_text in GROUPS.items():
        group = typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode="rich", cls=PluginAwareGroup)
        app.add_typer(group, name=name)
        groups[name] = group
    return groups


def add_plugin_commands(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Let every loaded plugin add its commands; a plugin whose hook raises is marked failed."""
    from lossbench.cli._common import plugin_manager
    from lossbench.plugin_manager import _describe_exception

    pm = plugin_manager()
    cli = Commands(app, groups)
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(**{arg: cli for arg in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - one plugin's broken command must not stop the CLI
            pm.mark_failed(impl.plugin_name, f"register_commands: {_describe_exception(exc)}")

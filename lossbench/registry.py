"""The component registry, built from a plugin manager (a factory, not a mutable global).

    registry = load_registry()              # installed plugins, honouring the env switches
    loss = registry.get("loss", "l1dfl").build({"epsilon": "0.1"})
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any

from lossbench.components import KINDS, PLURALS, Component
from lossbench.errors import DuplicateComponentError, LossbenchError, UnknownComponentError
from lossbench.plugin_manager import PluginInfo, PluginManager, _describe_exception, create_plugin_manager


class Registry:
    """Components by kind and name, with the plugins that provided them."""

    def __init__(self, pm: PluginManager) -> None:
        self.plugin_manager = pm
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[str, str], DuplicateComponentError] = {}
        for kind in KINDS:
            self._collect(kind)

    # -- building -------------------------------------------------------------------------
    def _collect(self, kind: str) -> None:
        pm = self.plugin_manager
        caller = getattr(pm.hook, f"register_{PLURALS[kind]}")
        # Call each implementation ourselves, in load order, so that every component is
        # attributed to its plugin and one plugin's exception does not stop the others.
        order = {name: i for i, name in enumerate(pm.infos)}
        impls = sorted(caller.get_hookimpls(), key=lambda impl: order.get(impl.plugin_name, len(order)))
        for impl in impls:
            info = pm.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?", "?")
            staged: list[Component] = []

            def register(component: Component, _kind: str = kind, _staged: list = staged) -> None:
                if not isinstance(component, Component):
                    raise TypeError(f"register() expects a lossbench.Component, got {type(component).__name__}")
                if component.kind != _kind:
                    raise ValueError(f"{component.name!r} is a {component.kind}, registered in register_{PLURALS[_kind]}")
                _staged.append(component)

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - reported per plugin, others go on
                pm.mark_failed(info.name, f"register_{PLURALS[kind]}: {_describe_exception(exc)}")
                continue
            for component in staged:
                self._add(dataclasses.replace(
                    component, plugin=info.name, distribution=info.distribution, version=info.version
                ))

    def _add(self, component: Component) -> None:
        table = self._components[component.kind]
        key = (component.kind, component.name)
        if key in self._conflicts:
            err = self._conflicts[key]
            self._conflicts[key] = DuplicateComponentError(f"{err}, and by plugin {component.provider}")
            return
        first = table.get(component.name)
        if first is None:
            table[component.name] = component
            return
        del table[component.name]
        self._conflicts[key] = DuplicateComponentError(
            f"{component.kind} {component.name!r} is registered by plugin {first.provider} "
            f"and by plugin {component.provider}; uninstall one, or block one with "
            f"LOSSBENCH_DISABLE_PLUGINS={component.plugin}"
        )

    # -- queries --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._components[_check_kind(kind)])

    def components(self, kind: str) -> list[Component]:
        kind = _check_kind(kind)
        return [self._components[kind][name] for name in self.names(kind)]

    def conflicts(self, kind: str | None = None) -> list[DuplicateComponentError]:
        kind = None if kind is None else _check_kind(kind)
        return [err for (k, _), err in sorted(self._conflicts.items(), key=lambda kv: kv[0]) if kind in (None, k)]

    def get(self, kind: str, name: str) -> Component:
        kind = _check_kind(kind)
        table = self._components[kind]
        if name in table:
            return table[name]
        if (kind, name) in self._conflicts:
            raise self._conflicts[(kind, name)]
        known = sorted(table)
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        did = f"did you mean {hint[0]!r}? " if hint else ""
        listing = ", ".join(known) if known else "none (is a plugin failing? see `lossbench plugins`)"
        raise UnknownComponentError(f"unknown {kind} {name!r}; {did}available: {listing}")

    def build(self, kind: str, name: str, overrides: dict[str, Any] | None = None, **extra: Any) -> Any:
        return self.get(kind, name).build(overrides, **extra)

    def plugins(self) -> list[PluginInfo]:
        return list(self.plugin_manager.infos.values())

    def provided_by(self, plugin: str) -> list[Component]:
        return [c for kind in KINDS for c in self.components(kind) if c.plugin == plugin]


def _check_kind(kind: str) -> str:
    singular = {v: k for k, v in PLURALS.items()}.get(kind, kind)
    if singular not in KINDS:
        raise LossbenchError(f"unknown component kind {kind!r}; use one of {', '.join(PLURALS.values())}")
    return singular


def load_registry(*, entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()) -> Registry:
    """Discover plugins (see :mod:`lossbench.plugin_manager` for the order) and build a registry."""
    return Registry(create_plugin_manager(entry_points=entry_points, plugins=plugins))

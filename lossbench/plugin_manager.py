"""Plugin discovery with pluggy.

Discovery order (documented in CONTRIBUTING.md):

1. Every entry point in the ``lossbench`` group of every installed distribution, the built-in
   plugins included (they ship in the ``lossbench`` distribution and use the same entry points).
2. They are loaded sorted by distribution name, then entry-point name, so the order (and thus
   which plugin is "first" in a duplicate-name error) does not depend on install order.
3. ``LOSSBENCH_PLUGINS=a,b`` loads only the named plugins (an empty value loads none);
   ``LOSSBENCH_DISABLE_PLUGINS=a,b`` blocks the named ones. Both take entry-point names.
4. Plugins passed explicitly (tests, embedding applications) are registered after those.

A plugin that fails to import, implements a hook that does not exist (pluggy's
``check_pending``), or whose hook raises, is recorded as failed with its name and distribution;
the other plugins still load. Blocked plugins are blocked in pluggy itself (``set_blocked``), so
nothing can register them later by accident.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from lossbench import PROJECT, hookspecs

ENV_ONLY = "LOSSBENCH_PLUGINS"
ENV_BLOCK = "LOSSBENCH_DISABLE_PLUGINS"


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """A plugin the manager holds: its name, where it came from and its state."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"  # loaded | failed | blocked
    error: str = ""


def _split_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=PROJECT))
    # One distribution may be visible twice (e.g. an editable install plus a build dir):
    # keep the first of each (distribution, name) pair.
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in sorted(eps, key=lambda e: ((e.dist.name if e.dist else "").lower(), e.name)):
        key = ((ep.dist.name if ep.dist else "").lower(), ep.name)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return unique


def _describe_exception(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers, per plugin, its distribution and load state."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def add_plugin(self, plugin: Any, name: str, distribution: str = "", version: str = "") -> None:
        """Register an already imported plugin object (module or instance)."""
        module = getattr(plugin, "__name__", type(plugin).__name__)
        try:
            self.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - a bad plugin must not stop the others
            self.infos[name] = PluginInfo(name, distribution, version, module, "failed", _describe_exception(exc))
            return
        self.infos[name] = PluginInfo(name, distribution, version, module)
        self.drop_pending()

    def block(self, name: str, distribution: str, version: str, module: str, reason: str) -> None:
        """Block a plugin by name (pluggy's ``set_blocked``) and remember why."""
        self.set_blocked(name)
        self.infos[name] = PluginInfo(name, distribution, version, module, "blocked", reason)

    def drop_pending(self) -> None:
        """Run pluggy's ``check_pending`` and fail (unregister) each plugin that implements a hook
        with no specification, a misspelt hook name most often; the other plugins stay."""
        while True:
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.get_name(exc.plugin) or "?"
                unknown = sorted(n for n in dir(self.hook) if not n.startswith("_")
                                 and not getattr(self.hook, n).has_spec()
                                 and any(i.plugin is exc.plugin for i in getattr(self.hook, n).get_hookimpls()))
                self.mark_failed(name, f"unknown hook {', '.join(map(repr, unknown))} "
                                       f"(known: {', '.join(sorted(_spec_names()))})")

    def failures(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.status == "failed"]

    def mark_failed(self, name: str, error: str) -> None:
        info = self.infos.get(name)
        if info is not None:
            self.infos[name] = dataclasses.replace(info, status="failed", error=error)
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)


def _spec_names() -> list[str]:
    return [n for n in vars(hookspecs) if n.startswith("register_")]


def create_plugin_manager(
    *, entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()
) -> PluginManager:
    """A fresh plugin manager: installed entry points (unless disabled), then ``plugins``.

    ``plugins`` are ``(name, module_or_object)`` pairs registered as-is (useful for tests and
    applications that embed lossbench).
    """
    pm = PluginManager()
    if entry_points:
        only = _split_env(os.environ.get(ENV_ONLY))
        blocked = _split_env(os.environ.get(ENV_BLOCK)) or set()
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if (only is not None and ep.name not in only) or ep.name in blocked:
                reason = f"blocked by {ENV_BLOCK}" if ep.name in blocked else f"not in {ENV_ONLY}"
                pm.block(ep.name, dist, version, ep.value, reason)
                continue
            if ep.name in pm.infos:
                first = pm.infos[ep.name]
                pm.infos[f"{ep.name}@{dist}"] = PluginInfo(
                    ep.name, dist, version, ep.value, "failed",
                    f"plugin name {ep.name!r} is also used by {first.distribution}; rename one entry point",
                )
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - includes SystemExit from a broken import
                if isinstance(exc, KeyboardInterrupt):
                    raise
                pm.infos[ep.name] = PluginInfo(ep.name, dist, version, ep.value, "failed", _describe_exception(exc))
                continue
            pm.add_plugin(plugin, ep.name, dist, version)
    for name, plugin in plugins:
        pm.add_plugin(plugin, name, distribution=getattr(plugin, "__name__", name), version="local")
    return pm

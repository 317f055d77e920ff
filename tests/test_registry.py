"""The pluggy registry: discovery, provenance, duplicates, unknown names, broken plugins."""

from __future__ import annotations

import types

import pytest

import lossbench
from lossbench import Component
from lossbench.errors import DuplicateComponentError, LossbenchError, UnknownComponentError
from lossbench.registry import load_registry


def loss(name: str, summary: str = "a test loss") -> Component:
    return Component(kind="loss", name=name, summary=summary, factory="json:dumps")


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose hooks register the given components."""
    ns = types.SimpleNamespace()
    for hook, components in hooks.items():
        def impl(register, _components=components):
            for c in _components:
                register(c)
        impl.__name__ = hook
        setattr(ns, hook, lossbench.hookimpl(impl))
    return ns


def test_builtins_come_through_entry_points():
    reg = load_registry()
    assert {"l1dfl", "dl", "dfl", "dce"} <= set(reg.names("loss"))
    l1dfl = reg.get("loss", "l1dfl")
    assert (l1dfl.plugin, l1dfl.distribution, l1dfl.version) == ("l1dfl", "lossbench", lossbench.__version__)
    assert reg.get("loss", "dfl").plugin == "monai"
    infos = {i.name: i for i in reg.plugins()}
    assert infos["l1dfl"].status == infos["monai"].status == "loaded"


def test_explicit_plugins_and_provenance():
    reg = load_registry(entry_points=False, plugins=[("extra", plugin(register_losses=[loss("tversky")]))])
    assert reg.names("losses") == ["tversky"]
    comp = reg.get("loss", "tversky")
    assert comp.plugin == "extra" and reg.provided_by("extra") == [comp]


def test_duplicate_name_names_both_plugins():
    reg = load_registry(entry_points=False, plugins=[
        ("first", plugin(register_losses=[loss("dice"), loss("other")])),
        ("second", plugin(register_losses=[loss("dice")])),
    ])
    with pytest.raises(DuplicateComponentError, match=r"'dice' is registered by plugin first .* and by plugin second"):
        reg.get("loss", "dice")
    assert reg.names("loss") == ["other"]  # the unambiguous one still works
    assert len(reg.conflicts("loss")) == 1 and reg.conflicts("network") == []


def test_same_name_for_different_kinds_is_fine():
    net = Component(kind="network", name="dice", summary="a net", factory="json:dumps")
    reg = load_registry(entry_points=False, plugins=[
        ("a", plugin(register_losses=[loss("dice")], register_networks=[net])),
    ])
    assert reg.get("network", "dice").kind == "network" and reg.get("loss", "dice").kind == "loss"


def test_unknown_name_suggests_and_lists():
    reg = load_registry()
    with pytest.raises(UnknownComponentError) as info:
        reg.get("loss", "l1dlf")
    message = str(info.value)
    assert "did you mean 'l1dfl'?" in message and "dce, dfl, dl, l1dfl" in message
    with pytest.raises(UnknownComponentError, match="available: "):
        reg.get("loss", "zzzzzz")
    with pytest.raises(LossbenchError, match="unknown component kind"):
        reg.get("metric", "dice")


def test_failing_hook_is_reported_and_others_load():
    def boom(register):
        raise RuntimeError("cannot register")
    bad = types.SimpleNamespace(register_losses=lossbench.hookimpl(boom))
    reg = load_registry(entry_points=False, plugins=[("bad", bad), ("good", plugin(register_losses=[loss("ok")]))])
    assert reg.names("loss") == ["ok"]
    info = {i.name: i for i in reg.plugins()}["bad"]
    assert info.status == "failed" and "RuntimeError: cannot register" in info.error


def test_wrong_object_or_kind_registered_is_a_plugin_failure():
    def wrong(register):
        register("not a component")
    net = Component(kind="network", name="n", summary="a net", factory="json:dumps")
    reg = load_registry(entry_points=False, plugins=[
        ("wrong", types.SimpleNamespace(register_losses=lossbench.hookimpl(wrong))),
        ("mixed", plugin(register_losses=[net])),
    ])
    infos = {i.name: i for i in reg.plugins()}
    assert "expects a lossbench.Component" in infos["wrong"].error
    assert "is a network" in infos["mixed"].error


def test_misspelt_hook_is_reported():
    def register_loses(register):
        pass
    typo = types.SimpleNamespace(register_loses=lossbench.hookimpl(register_loses))
    reg = load_registry(entry_points=False, plugins=[("typo", typo)])
    info = {i.name: i for i in reg.plugins()}["typo"]
    assert info.status == "failed" and "register_loses" in info.error


def test_env_switch_loads_only_named_plugins(monkeypatch):
    monkeypatch.setenv("LOSSBENCH_PLUGINS", "l1dfl")
    reg = load_registry()
    assert reg.names("loss") == ["l1dfl"]
    assert {i.name: i.status for i in reg.plugins()}["monai"] == "blocked"
    monkeypatch.setenv("LOSSBENCH_PLUGINS", "")
    assert load_registry().names("loss") == []


def test_env_switch_blocks_plugins(monkeypatch):
    monkeypatch.setenv("LOSSBENCH_DISABLE_PLUGINS", "monai, other")
    reg = load_registry()
    assert "l1dfl" in reg.names("loss") and "dl" not in reg.names("loss")
    info = {i.name: i for i in reg.plugins()}["monai"]
    assert info.status == "blocked" and "LOSSBENCH_DISABLE_PLUGINS" in info.error


def test_each_registry_is_independent():
    one = load_registry(entry_points=False, plugins=[("a", plugin(register_losses=[loss("x")]))])
    two = load_registry(entry_points=False)
    assert one.names("loss") == ["x"] and two.names("loss") == []

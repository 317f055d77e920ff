"""A pytest plugin for lossbench plugin authors (and lossbench's own tests), as tox's ``tox.pytest``.

Installing lossbench activates it in every pytest session of that environment, through the
``pytest11`` entry point named ``lossbench`` (``pytest -p no:lossbench`` turns it off). It is
import-light: torch is imported only by the fixtures that build a loss. Fixtures:

``lossbench_registry``
    The registry of the installed plugins, built afresh for the test (so it honours
    ``LOSSBENCH_PLUGINS`` / ``LOSSBENCH_DISABLE_PLUGINS`` set with ``monkeypatch``).
``lossbench_make_registry``
    ``lossbench_make_registry(plugin, ...)``: an isolated registry holding only the given plugin
    modules or objects (or ``(name, plugin)`` pairs), no installed entry points unless
    ``entry_points=True``. Test a hook without installing the distribution.
``lossbench_build_loss``
    ``lossbench_build_loss("tversky", alpha=0.5)``: the loss module, built as ``lossbench run``
    builds it (parameters are checked and coerced against the component's ``Param`` list).
``lossbench_loss_contract``
    ``lossbench_loss_contract("tversky", {"alpha": 0.5}, cases=[...])``: runs every contract check
    and the hand-computed cases, and fails once, listing every check that failed.

The pytest header names the lossbench plugins that were found, e.g.
``lossbench 0.1.0, plugins: l1dfl, monai, psma, tversky (lossbench-tversky 0.1.0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from lossbench.components import Component
    from lossbench.registry import Registry
    from lossbench.testing.cases import LossCase


def pytest_report_header(config: pytest.Config) -> str:
    import lossbench

    try:
        from lossbench.registry import load_registry

        infos = load_registry().plugins()
    except Exception as exc:  # noqa: BLE001 - a header must never stop a session
        return f"lossbench {lossbench.__version__}, plugins: not loaded ({type(exc).__name__}: {exc})"
    names = []
    for info in infos:
        label = info.name if info.distribution == "lossbench" else f"{info.name} ({info.distribution} {info.version})"
        names.append(label if info.status == "loaded" else f"{label} [{info.status}]")
    return f"lossbench {lossbench.__version__}, plugins: {', '.join(names) or 'none'}"


@pytest.fixture
def lossbench_registry() -> Registry:
    """The registry of the installed plugins, as ``lossbench list`` sees it."""
    from lossbench.registry import load_registry

    return load_registry()


@pytest.fixture
def lossbench_make_registry() -> Callable[..., Registry]:
    """Factory: ``lossbench_make_registry(*plugins, entry_points=False)`` -> an isolated Registry."""
    from lossbench.registry import load_registry

    def make(*plugins: Any, entry_points: bool = False) -> Registry:
        pairs = []
        for plugin in plugins:
            if isinstance(plugin, tuple):
                pairs.append(plugin)
            else:
                pairs.append((getattr(plugin, "__name__", type(plugin).__name__), plugin))
        return load_registry(entry_points=entry_points, plugins=pairs)

    return make


@pytest.fixture
def lossbench_build_loss(lossbench_registry: Registry) -> Callable[..., Any]:
    """Factory: ``lossbench_build_loss(name, **params)`` -> the ``torch.nn.Module`` of a registered loss."""

    def build(name: str, /, **params: Any) -> Any:
        return lossbench_registry.build("loss", name, params)

    return build


@pytest.fixture
def lossbench_loss_contract(lossbench_registry: Registry) -> Callable[..., list[tuple[str, str | None]]]:
    """Runner: ``lossbench_loss_contract(name_or_component, params=None, cases=())``.

    Fails the test with every failing check and case listed; returns ``[(check, None), ...]``.
    """

    def run(
        loss: str | Component,
        params: Mapping[str, Any] | None = None,
        cases: Iterable[LossCase | tuple] = (),
    ) -> list[tuple[str, str | None]]:
        from lossbench.testing.cases import LossCase, case_ids
        from lossbench.testing.losses import run_loss_case, run_loss_contract

        component = lossbench_registry.get("loss", loss) if isinstance(loss, str) else loss
        results = run_loss_contract(component, params)
        rows = [LossCase.of(row) for row in cases]
        for case_id, case in zip(case_ids(rows), rows):
            try:
                run_loss_case(case, component, params)
            except AssertionError as exc:
                results.append((case_id, str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported with the others
                results.append((case_id, f"{type(exc).__name__}: {exc}"))
            else:
                results.append((case_id, None))
        # first lines only: pytest's assertion rewriting appends its own explanation
        failed = [f"{check}: {error.splitlines()[0]}" for check, error in results if error]
        if failed:
            pytest.fail(f"loss {component.name!r} fails {len(failed)} of {len(results)}:\n  " + "\n  ".join(failed))
        return results

    return run

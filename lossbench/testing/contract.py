"""pytest base class that runs the loss contract, and your hand-computed cases, on a registered loss."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from lossbench.components import Component
from lossbench.testing.cases import LossCase, case_ids
from lossbench.testing.losses import LOSS_CHECKS, run_loss_case, run_loss_check


class LossContract:
    """Subclass in a test module and set ``loss_name``; optionally ``loss_params`` and ``loss_cases``.

    ``test_loss_contract`` runs every check of :data:`LOSS_CHECKS` on the loss built with
    ``loss_params``; ``test_loss_case`` runs each row of ``loss_cases`` (a :class:`LossCase` or a
    ``(params, logits, target, expected)`` tuple, as MONAI's ``TEST_CASES``) and compares the loss
    with the value you worked out by hand. A class without cases reports that test as skipped.
    """

    loss_name: ClassVar[str] = ""
    loss_params: ClassVar[dict[str, Any]] = {}
    loss_cases: ClassVar[list[LossCase | tuple]] = []

    # Function scope (a registry is built in a few milliseconds): a class-scoped fixture written
    # as an instance method is deprecated in pytest 9 and an error in pytest 10.
    @pytest.fixture
    def loss_component(self) -> Component:
        from lossbench.registry import load_registry

        if not self.loss_name:
            pytest.fail(f"{type(self).__name__} must set loss_name")
        return load_registry().get("loss", self.loss_name)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "loss_case" not in metafunc.fixturenames:
            return
        cases = [LossCase.of(row) for row in self.loss_cases]
        if cases:
            metafunc.parametrize("loss_case", cases, ids=case_ids(cases))
        else:
            reason = "no loss_cases: add hand-computed values (lossbench.testing.LossCase)"
            metafunc.parametrize("loss_case", [pytest.param(None, marks=pytest.mark.skip(reason=reason))])

    @pytest.mark.parametrize("check", list(LOSS_CHECKS))
    def test_loss_contract(self, loss_component: Component, check: str) -> None:
        run_loss_check(check, loss_component, self.loss_params)

    def test_loss_case(self, loss_component: Component, loss_case: LossCase) -> None:
        run_loss_case(loss_case, loss_component, self.loss_params)

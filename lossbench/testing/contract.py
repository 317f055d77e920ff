"""pytest base class that runs the loss contract on a registered loss."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from lossbench.testing.losses import LOSS_CHECKS, run_loss_check


class LossContract:
    """Subclass in a test module and set ``loss_name`` (and optionally ``loss_params``)."""

    loss_name: ClassVar[str] = ""
    loss_params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(scope="class")
    def loss_component(self):
        from lossbench.registry import load_registry

        if not self.loss_name:
            pytest.fail(f"{type(self).__name__} must set loss_name")
        return load_registry().get("loss", self.loss_name)

    @pytest.mark.parametrize("check", list(LOSS_CHECKS))
    def test_loss_contract(self, loss_component, check: str) -> None:
        run_loss_check(check, loss_component, self.loss_params)

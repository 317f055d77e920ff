"""Test helpers for plugin authors: hold your loss to the same contract as the built-ins.

With pytest, subclass :class:`LossContract` in your plugin's tests::

    from lossbench.testing import LossContract

    class TestMyLoss(LossContract):
        loss_name = "myloss"            # as registered by your plugin
        loss_params = {"alpha": 0.3}    # optional parameter overrides

Without pytest: ``run_loss_contract(component)`` returns ``[(check, error or None), ...]``;
``lossbench check loss NAME`` does the same from the command line.
"""

from __future__ import annotations

from typing import Any

from lossbench.testing.losses import LOSS_CHECKS, run_loss_check, run_loss_contract

__all__ = ["LOSS_CHECKS", "LossContract", "run_loss_check", "run_loss_contract"]


def __getattr__(name: str) -> Any:
    if name == "LossContract":  # imports pytest, so only on demand
        from lossbench.testing.contract import LossContract

        return LossContract
    raise AttributeError(name)

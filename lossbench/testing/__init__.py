"""Test helpers for plugin authors: hold your loss to the same contract as the built-ins.

With pytest, subclass :class:`LossContract` in your plugin's tests, and add hand-computed cases::

    from lossbench.testing import LossCase, LossContract

    class TestMyLoss(LossContract):
        loss_name = "myloss"            # as registered by your plugin
        loss_params = {"alpha": 0.3}    # optional parameter overrides
        loss_cases = [                  # optional: (params, logits, target, expected), by hand
            # p = softmax(0, 0) = 0.5 on both voxels, one of them foreground: 1 - 2*0.5 / (1 + 1)
            LossCase({}, logits=[[[0.0, 0.0], [0.0, 0.0]]], target=[[[1, 0]]], expected=0.5),
        ]

Installing lossbench also installs a pytest plugin (:mod:`lossbench.testing.pytest_plugin`,
``pytest11`` entry point ``lossbench``) with the fixtures ``lossbench_registry``,
``lossbench_make_registry``, ``lossbench_build_loss`` and ``lossbench_loss_contract``.

Without pytest: ``run_loss_contract(component)`` returns ``[(check, error or None), ...]``;
``lossbench check loss NAME`` does the same from the command line.

Importing this package is cheap (no torch, no pytest): the names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LossCase": "lossbench.testing.cases",
    "LossContract": "lossbench.testing.contract",  # imports pytest
    "LOSS_CHECKS": "lossbench.testing.losses",      # these import torch
    "random_inputs": "lossbench.testing.losses",
    "run_loss_case": "lossbench.testing.losses",
    "run_loss_check": "lossbench.testing.losses",
    "run_loss_contract": "lossbench.testing.losses",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'lossbench.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""Hand-computed loss cases: tiny inputs written out in full, with the value worked out by hand.

Import-light (no torch): a test module can build its table before torch is imported, and the
pytest plugin can name the type. The tensors are made when a case runs
(:func:`lossbench.testing.losses.run_loss_case`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class LossCase(NamedTuple):
    """One row of a ``loss_cases`` table, in the order MONAI's ``TEST_CASES`` use.

    ``logits`` is ``[B, C, *spatial]`` and ``target`` ``[B, 1, *spatial]`` (class indices), both as
    nested lists or tensors; ``expected`` is the loss value worked out by hand; ``params`` override
    the component's defaults (and the test class's ``loss_params``). A plain 4-tuple
    ``(params, logits, target, expected)`` is accepted wherever a ``LossCase`` is.
    """

    params: Mapping[str, Any]
    logits: Sequence[Any] | Any
    target: Sequence[Any] | Any
    expected: float
    id: str = ""
    rtol: float = 1e-4
    atol: float = 1e-5

    @classmethod
    def of(cls, row: LossCase | Sequence[Any]) -> LossCase:
        """A ``LossCase`` from a ``LossCase`` or a ``(params, logits, target, expected[, id])`` row."""
        if isinstance(row, cls):
            return row
        if not isinstance(row, Sequence) or not 4 <= len(row) <= 7:
            raise TypeError(f"a loss case is (params, logits, target, expected[, id, rtol, atol]); got {row!r}")
        return cls(*row)


def case_ids(cases: Sequence[LossCase]) -> list[str]:
    """Test ids: each case's ``id``, else ``case0``, ``case1``, ..."""
    return [case.id or f"case{i}" for i, case in enumerate(cases)]

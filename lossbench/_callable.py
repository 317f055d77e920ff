"""Make a module callable as an API function (``lossbench.compare(...)``, ``lossbench.predict(...)``).

``lossbench.compare`` is a subpackage and ``lossbench.predict`` a module, and importing a submodule
sets the package attribute of that name, so a plain function ``lossbench.compare`` would be replaced
by the package as soon as anything imports ``lossbench.compare.loader``. Instead the module itself is
callable: calling it calls :mod:`lossbench.api`'s function of the same name, while
``lossbench.compare.loader`` and ``from lossbench.predict import find_inputs`` keep working.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def make_callable(module_name: str, function: str) -> None:
    """Calling the module ``module_name`` calls ``lossbench.api.<function>`` (light: api is imported on call)."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            from lossbench import api

            return getattr(api, function)(*args, **kwargs)

        @property
        def __signature__(self) -> Any:
            import inspect

            from lossbench import api

            return inspect.signature(getattr(api, function))

    sys.modules[module_name].__class__ = _CallableModule

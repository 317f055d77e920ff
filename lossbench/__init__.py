"""lossbench: a plugin-based benchmark for medical-image segmentation losses.

This module stays light: importing it must not import torch, monai or mlflow, so that
``lossbench --help`` and plugin discovery stay fast. Plugins use :data:`hookimpl`::

    import lossbench

    @lossbench.hookimpl
    def register_losses(register):
        register(lossbench.Component(kind="loss", name="myloss", ...))
"""

from __future__ import annotations

import pluggy

from lossbench.components import Component, Param

__version__ = "0.1.0"

#: The project name: pluggy marker name, plugin-manager name and entry-point group.
PROJECT = "lossbench"

#: Marker for plugin hook implementations (``@lossbench.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "Component", "Param", "__version__", "hookimpl"]

"""lossbench: a plugin-based benchmark for medical-image segmentation losses.

This module stays light: importing it must not import torch, monai or mlflow, so that
``lossbench --help`` and plugin discovery stay fast. Plugins use :data:`hookimpl`::

    import lossbench

    @lossbench.hookimpl
    def register_losses(register):
        register(lossbench.Component(kind="loss", name="myloss", ...))

The Python API mirrors the CLI (same options, checks and errors; see :mod:`lossbench.api`):
``lossbench.run(...)``, ``lossbench.evaluate(...)``, ``lossbench.compare(...)`` and
``lossbench.predict(...)``, looked up on first use so that importing lossbench stays light.
"""

from __future__ import annotations

import logging
import warnings

import pluggy

from lossbench.components import Component, Param

__version__ = "0.1.0"

# MONAI's DICOM reader registers an nvImageCodec decoder when pydicom is installed (the dicom extra)
# and, without CUDA, warns about it on every import: a line that is neither ours nor actionable.
# Its reader repeats it as a UserWarning each time a LoadImage builds its readers (every transform).
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin", category=UserWarning)

#: The project name: pluggy marker name, plugin-manager name and entry-point group.
PROJECT = "lossbench"

#: Marker for plugin hook implementations (``@lossbench.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "Component", "Param", "__version__", "compare", "evaluate", "hookimpl", "predict", "run"]


def __getattr__(name: str):  # PEP 562: the API functions, imported on first use
    if name in ("run", "evaluate"):
        from lossbench import api

        return getattr(api, name)
    if name in ("compare", "predict"):
        # a subpackage and a module of the same names: callable (lossbench._callable)
        import importlib

        return importlib.import_module(f"lossbench.{name}")
    raise AttributeError(f"module 'lossbench' has no attribute {name!r}")


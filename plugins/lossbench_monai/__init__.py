"""lossbench's built-in MONAI plugin: the study's comparison losses (and networks).

A plugin like any other: discovered through the ``lossbench`` entry point ``monai`` of the
``lossbench`` distribution. This module only declares components; torch and monai are
imported when a component is built.
"""

from __future__ import annotations

import lossbench
from lossbench_monai.loss_specs import LOSSES
from lossbench_monai.network_specs import NETWORKS


@lossbench.hookimpl
def register_losses(register):
    for component in LOSSES:
        register(component)


@lossbench.hookimpl
def register_networks(register):
    for component in NETWORKS:
        register(component)

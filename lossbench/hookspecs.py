"""The hook specifications every lossbench plugin may implement.

Each hook receives a ``register`` callback and calls it once per component with a
:class:`lossbench.Component`. A plugin implements only the hooks it needs.
Plugin modules must stay cheap to import: keep torch/monai imports inside the factories.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

from lossbench.components import Component

hookspec = pluggy.HookspecMarker("lossbench")

Register = Callable[[Component], None]


@hookspec
def register_losses(register: Register) -> None:
    """Register segmentation losses: ``register(Component(kind="loss", ...))``.

    The factory returns a ``torch.nn.Module`` called as ``loss(logits, target)`` with
    logits ``[B, C, *spatial]`` (float) and target ``[B, 1, *spatial]`` (integer class index).
    """


@hookspec
def register_networks(register: Register) -> None:
    """Register networks: ``register(Component(kind="network", ...))``.

    The factory takes ``in_channels``, ``out_channels`` and ``spatial_dims`` plus its own
    parameters and returns a ``torch.nn.Module`` mapping ``[B, in, *spatial]`` to ``[B, out, *spatial]``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``register(Component(kind="dataset", ...))``."""


@hookspec
def register_executors(register: Register) -> None:
    """Register executors, where ``lossbench matrix --executor NAME`` runs its cells:
    ``register(Component(kind="executor", ...))``.

    The factory takes the component's parameters (``-X key=value``) plus the matrix's context
    (``jobs``, ``work``: accept ``**context``) and returns a :class:`lossbench.executors.Executor`.
    It receives each cell as its ``lossbench run`` argv and nothing else (see
    :mod:`lossbench.executors`). Import the engine's packages (ray, submitit) inside the factory.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``lossbench`` CLI (as simonw/llm's ``register_commands``).

    ``cli`` is a :class:`lossbench.cli.plugin_commands.Commands`: ``cli.app`` is the root Typer
    application and ``cli.group(name)`` a sub-command group (``cli.group("data")`` is
    ``lossbench data``). Import heavy packages inside the command functions, not here: this hook
    runs at every start of the CLI, ``--help`` included.

        @lossbench.hookimpl
        def register_commands(cli):
            from my_plugin.commands import convert
            cli.group("data").command("convert")(convert)
    """

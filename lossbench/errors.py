"""Errors a user can cause. The CLI prints their message as one line and exits 1."""

from __future__ import annotations


class LossbenchError(Exception):
    """Base class of every error that is the user's to fix (bad name, bad value, bad file)."""


class UnknownComponentError(LossbenchError, KeyError):
    """A loss, network or dataset name that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(LossbenchError):
    """Two plugins registered the same name for the same kind of component."""


class ParameterError(LossbenchError, ValueError):
    """A component parameter that does not exist or whose value does not parse."""


class PluginError(LossbenchError):
    """A plugin that failed to load or to register its components."""


class ConfigError(LossbenchError):
    """A configuration file that is missing, unreadable or malformed."""

"""Settings from the command line (``key=value``) and from TOML config files.

A config file holds one table per component kind, with the component ``name`` and any of its
parameters; other tables (``[train]`` …) belong to the commands that read them::

    [loss]
    name = "l1dfl"
    epsilon = 0.1
    gamma = 0.0

Command-line values win over the file; the file wins over the plugin's defaults.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lossbench.components import KINDS
from lossbench.errors import ConfigError, ParameterError


def parse_assignments(items: Iterable[str], what: str = "option") -> dict[str, str]:
    """``["gamma=0", "epsilon=0.1"]`` -> ``{"gamma": "0", "epsilon": "0.1"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParameterError(f"{what} {item!r} must look like name=value, e.g. gamma=2")
        out[key] = value.strip()
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    for kind in KINDS:
        section = data.get(kind)
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"config file {str(path)!r}: [{kind}] must be a table")
    return data


def component_choice(
    config: Mapping[str, Any] | None,
    kind: str,
    name: str | None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """The component name and parameter overrides for ``kind``, merging file and command line.

    Parameters from the file apply only when the file names the same component as the
    command line (or the command line names none).
    """
    section = dict((config or {}).get(kind) or {})
    file_name = section.pop("name", None)
    chosen = name or file_name
    merged: dict[str, Any] = dict(section) if (file_name is None or file_name == chosen) else {}
    merged.update(overrides or {})
    return chosen, merged

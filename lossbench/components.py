"""What a plugin registers: a :class:`Component` with typed :class:`Param` entries.

Components are plain data (no torch import). The factory is either a callable or an import
string ``"package.module:attribute"`` that is only imported when the component is built, so
listing what is installed never pays for torch or monai.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lossbench.errors import ParameterError, PluginError

KINDS: tuple[str, ...] = ("loss", "network", "dataset", "executor")
PLURALS: dict[str, str] = {"loss": "losses", "network": "networks", "dataset": "datasets", "executor": "executors"}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SCALAR_TYPES = (bool, int, float, str)


def split_items(text: str) -> list[str]:
    """``"96,96,64"``, ``"(1, 2)"`` -> the item strings."""
    return [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]


def parse_numbers(value: Any, kind: type, *, what: str, count: tuple[int, ...] = (1, 3),
                  broadcast: int | None = 3, positive: bool = True) -> tuple:
    """The one parser of number tuples (patch sizes, spacings, shapes).

    ``value`` is a string (``"96"``, ``"96,96,64"``, ``"96x96x64"``), a number or a sequence;
    ``count`` lists the accepted lengths, and one value is repeated ``broadcast`` times.
    Raises :class:`ParameterError` naming ``what`` and the accepted forms.
    """
    if isinstance(value, str):
        parts: list[Any] = split_items(value.replace("x", ","))  # 96x96x64 too
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        parts = [value]
    kind_name = "integers" if kind is int else "numbers"
    forms = " or ".join(map(str, count))
    try:
        items = tuple(_coerce_number(kind, p) for p in parts)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} expects {forms} {kind_name} like 96 or 96,96,64, got {value!r}") from None
    if len(items) not in count or (positive and any(i <= 0 for i in items)):
        sign = "positive " if positive else ""
        raise ParameterError(f"{what} needs {forms} {sign}values, got {value!r}")
    if len(items) == 1 and broadcast:
        items = items * broadcast
    return items


def _coerce_number(kind: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if kind is int and isinstance(value, str):
        return int(value.strip())
    return kind(value)


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a component.

    ``type`` is ``bool``, ``int``, ``float``, ``str`` or ``tuple``; a tuple parameter holds
    items of ``item`` type and is written ``16,32,64`` on the command line. ``default`` may be
    ``None`` to mean "not set" (then any value of ``type`` is accepted).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    item: type | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"parameter name {self.name!r} must be lowercase snake_case")
        if self.type not in (*_SCALAR_TYPES, tuple):
            raise ValueError(f"parameter {self.name!r}: type must be bool, int, float, str or tuple")
        if self.type is tuple and self.item not in _SCALAR_TYPES:
            raise ValueError(f"parameter {self.name!r}: a tuple parameter needs item=int/float/str/bool")
        if self.default is not None:
            object.__setattr__(self, "default", self.coerce(self.default))

    @property
    def type_name(self) -> str:
        if self.type is tuple:
            return f"{self.item.__name__}[,...]"  # type: ignore[union-attr]
        return self.type.__name__

    def coerce(self, value: Any) -> Any:
        """Turn a string (command line) or a TOML/JSON value into this parameter's type."""
        if value is None:
            return None
        if self.type is tuple:
            if isinstance(value, str):
                parts = split_items(value)
            elif isinstance(value, Sequence):
                parts = list(value)
            else:
                raise self._bad(value)
            out = tuple(_coerce_scalar(self.item, p, self) for p in parts)  # type: ignore[arg-type]
        else:
            out = _coerce_scalar(self.type, value, self)
        if self.choices is not None and out not in self.choices:
            choices = ", ".join(map(str, self.choices))
            raise ParameterError(f"parameter {self.name!r}: {out!r} is not one of {choices}")
        return out

    def _bad(self, value: Any) -> ParameterError:
        return ParameterError(f"parameter {self.name!r} expects {self.type_name}, got {value!r}")


def _coerce_scalar(kind: type, value: Any, param: Param) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise param._bad(value)
    if kind is int:
        if isinstance(value, bool):
            raise param._bad(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise param._bad(value) from None
        raise param._bad(value)
    if kind is float:
        if isinstance(value, bool):
            raise param._bad(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise param._bad(value) from None
        raise param._bad(value)
    if isinstance(value, str):
        return value
    raise param._bad(value)


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered loss, network, dataset or executor (where a matrix runs its cells).

    ``plugin``, ``distribution`` and ``version`` are filled in by the registry: they name the
    plugin (entry point) and the installed distribution that provided the component.
    """

    kind: str
    name: str
    summary: str
    factory: Callable[..., Any] | str
    params: tuple[Param, ...] = ()
    citation: str = ""
    formula: str = ""
    description: str = ""
    #: Optional ``validator(params: dict, **context)`` (callable or ``"module:attr"``) that raises
    #: :class:`lossbench.errors.LossbenchError` when the component cannot work in a given context,
    #: e.g. a network with a patch size it cannot take. Called before any training starts.
    validator: Callable[..., None] | str | None = None
    #: Parameter values per settings preset (as timm keeps ``default_cfgs`` beside each model):
    #: ``{"cpu": {"channels": (8, 16, 32, 64)}}`` makes the component small under ``--preset cpu``.
    #: A preset not listed uses the parameter defaults.
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    plugin: str = ""
    distribution: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"component kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not _NAME_RE.match(self.name):
            raise ValueError(f"{self.kind} name {self.name!r} must be lowercase: letters, digits, '_'")
        if not self.summary.strip() or "\n" in self.summary.strip():
            raise ValueError(f"{self.kind} {self.name!r} needs a one-line summary")
        if not (callable(self.factory) or (isinstance(self.factory, str) and ":" in self.factory)):
            raise ValueError(f"{self.kind} {self.name!r}: factory must be a callable or 'module:attribute'")
        object.__setattr__(self, "params", tuple(self.params))
        for preset, values in dict(self.presets).items():
            for key in values:
                self.param(key)  # a preset may only set declared parameters
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind} {self.name!r} declares a parameter twice")

    @property
    def provider(self) -> str:
        """``plugin (distribution version)``, the provenance shown in tables and logged with runs."""
        return f"{self.plugin} ({self.distribution} {self.version})"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = [p.name for p in self.params]
        hint = difflib.get_close_matches(name, known, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        listing = ", ".join(known) if known else "none"
        raise ParameterError(f"{self.kind} {self.name!r} has no parameter {name!r}{did} (parameters: {listing})")

    def defaults(self, preset: str | None = None) -> dict[str, Any]:
        """Parameter defaults, updated by the values of ``preset`` where the component has one."""
        values = {p.name: p.default for p in self.params}
        for key, value in dict(self.presets).get(preset or "", {}).items():
            values[key] = self.param(key).coerce(value)
        return values

    def resolve(self, overrides: Mapping[str, Any] | None = None, *, preset: str | None = None) -> dict[str, Any]:
        """Defaults (of ``preset``) updated by ``overrides`` (strings or typed values), each checked and coerced."""
        values = self.defaults(preset)
        for key, value in (overrides or {}).items():
            values[key] = self.param(key).coerce(value)
        return values

    def load_factory(self) -> Callable[..., Any]:
        return self._load(self.factory)

    def _load(self, ref: Callable[..., Any] | str) -> Callable[..., Any]:
        if callable(ref):
            return ref
        module_name, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.kind} {self.name!r} from plugin {self.plugin!r} ({self.distribution}): "
                f"cannot import {ref!r}: {exc}"
            ) from exc
        return obj

    def check(self, overrides: Mapping[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        """Resolve the parameters and run the component's validator with ``context``.

        Returns the resolved parameters. Raises :class:`ParameterError` or the validator's
        :class:`lossbench.errors.LossbenchError` with a message a user can act on.
        """
        params = self.resolve(overrides)
        if self.validator is not None:
            self._load(self.validator)(params, **context)
        return params

    def build(self, overrides: Mapping[str, Any] | None = None, **extra: Any) -> Any:
        """Create the object: ``factory(**resolved_params, **extra)``.

        ``extra`` carries arguments the engine supplies (for networks: channels, spatial dims)
        and that are not user parameters.
        """
        return self.load_factory()(**self.resolve(overrides), **extra)

"""Declaring, validating and (de)serialising parameters.

Every model parameter is a field of a frozen, slotted, keyword-only dataclass deriving from
:class:`Params`, declared with :func:`param`. The declaration carries the default, the unit, the
allowed range and the **source** of the default (a key from ``docs/parameters.md``, e.g.
``"S23"``, or the word ``"assumption"``). Validation, the TOML/JSON mapping, the parameter page
of the docs and ``virtlab params`` all read these declarations, so each default is written once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from virtlab.errors import ConfigError

__all__ = ["Params", "param", "ParamInfo", "describe"]

P = TypeVar("P", bound="Params")


@dataclasses.dataclass(frozen=True, slots=True)
class ParamInfo:
    """What the declaration of one parameter says about it."""

    unit: str
    source: str
    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[Any, ...] | None = None
    power_of_two: bool = False

    def allowed(self) -> str:
        """Human-readable allowed values, used in error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.power_of_two:
            parts.append("a power of two")
        if self.lo is not None or self.hi is not None:
            left = "(" if self.lo_open else "["
            lo = "-inf" if self.lo is None else _fmt(self.lo)
            hi = "inf" if self.hi is None else _fmt(self.hi)
            parts.append(f"in {left}{lo}, {hi}]")
        return " ".join(parts) if parts else "any value of the declared type"


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def param(
    default: Any,
    *,
    source: str,
    doc: str,
    unit: str = "",
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    power_of_two: bool = False,
) -> Any:
    """Declare a parameter field.

    Parameters
    ----------
    default:
        The default value (immutable).
    source:
        Where the default comes from: a source key of ``docs/parameters.md`` (``"S23"``), a
        short citation, or ``"assumption"`` (optionally followed by a reason).
    doc:
        One sentence on what the parameter means.
    unit:
        Unit of the value (also spelled in the field name).
    lo, hi, lo_open:
        Allowed closed range ``[lo, hi]`` (``lo_open`` makes it ``(lo, hi]``).
    choices:
        Allowed values for a string or enumerated parameter.
    power_of_two:
        The integer value must be a power of two.

    """
    info = ParamInfo(unit, source, doc, lo, hi, lo_open, choices, power_of_two)
    return dataclasses.field(default=default, metadata={"param": info})


class Params:
    """Base of all parameter dataclasses: validation and dict mapping.

    Subclasses are declared ``@dataclass(frozen=True, slots=True, kw_only=True)``. Construction
    validates every field (type, range, choices) and raises :class:`ConfigError` naming the field;
    a frozen instance is therefore always valid.
    """

    __slots__ = ()
    section: ClassVar[str] = ""
    #: Fields that were removed, each with the dotted name of the field that replaced it: a
    #: table that still names one is refused with a message that names the replacement.
    replaced: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for fld in dataclasses.fields(self):  # type: ignore[arg-type]
            info = fld.metadata.get("param")
            value = getattr(self, fld.name)
            hint = _hints(type(self))[fld.name]
            _check_type(fld.name, value, hint)
            if info is not None:
                _check_range(fld.name, value, info)
        self.check()

    def check(self) -> None:
        """Cross-field checks; override in subclasses and raise :class:`ConfigError`."""

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any]) -> P:
        """Build from a mapping (a TOML table), rejecting unknown keys.

        Nested :class:`Params` fields and tuples of them are built recursively; errors name the
        dotted field path.
        """
        if not isinstance(data, Mapping):
            raise ConfigError("", f"expected a table, got {type(data).__name__}")
        hints = _hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        for name in unknown:
            if name in cls.replaced:
                raise ConfigError(name, f"was replaced by {cls.replaced[name]}; set that "
                                        f"instead")
        if unknown:
            import difflib

            close = difflib.get_close_matches(str(unknown[0]), names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(unknown[0], f"unknown field; {hint}allowed fields are "
                                          f"{', '.join(names)}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            try:
                kwargs[name] = _convert(value, hints[name])
            except ConfigError as err:
                raise err.prefixed(name) from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain mapping (nested tables, lists) suitable for TOML or JSON."""
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(self):  # type: ignore[arg-type]
            out[fld.name] = _plain(getattr(self, fld.name))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Params):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _is_params_type(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Params)


def _convert(value: Any, hint: Any) -> Any:
    """Convert a TOML value to the declared type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if _is_params_type(hint):
        return hint.from_dict(value)
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError("", f"expected a list, got {value!r}")
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_convert(item, item_hint))
            except ConfigError as err:
                raise err.prefixed(f"[{index}]") from None
        return tuple(items)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if isinstance(value, Mapping):
            # A tagged union of Params: the member whose `kind` default matches.
            kind = value.get("kind")
            members = [a for a in args if _is_params_type(a)]
            kinds = [_kind_of(a) for a in members]
            for member, member_kind in zip(members, kinds, strict=True):
                if member_kind == kind:
                    return member.from_dict(value)
            raise ConfigError("kind", f"must be one of {', '.join(map(repr, kinds))}, got {kind!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _kind_of(cls: type) -> Any:
    for fld in dataclasses.fields(cls):
        if fld.name == "kind":
            return fld.default
    return None


def _check_type(name: str, value: Any, hint: Any) -> None:
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
    elif hint is str:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(name, f"must be of type {hint.__name__}, got {value!r}")


def _check_range(name: str, value: Any, info: ParamInfo) -> None:
    if info.choices is not None:
        if value not in info.choices:
            raise ConfigError(name, f"must be {info.allowed()}, got {value!r}")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    bad = (
        (info.lo is not None and (value <= info.lo if info.lo_open else value < info.lo))
        or (info.hi is not None and value > info.hi)
        or (info.power_of_two and (value < 1 or int(value) & (int(value) - 1) != 0))
    )
    if bad:
        unit = f" {info.unit}" if info.unit else ""
        raise ConfigError(name, f"must be {info.allowed()}{unit}, got {value!r}")


def describe(cls: type[Params]) -> list[tuple[str, Any, ParamInfo]]:
    """List ``(name, default, info)`` for every declared parameter of ``cls``."""
    rows = []
    for fld in dataclasses.fields(cls):  # type: ignore[arg-type]
        info = fld.metadata.get("param")
        if info is not None:
            rows.append((fld.name, fld.default, info))
    return rows

"""Typed dataclasses from TOML-like mappings, with errors that name the offending key.

`from_mapping(Cls, {...}, where="train")` checks every key against the dataclass fields
(unknown key -> error naming it and the known ones), converts values to the annotated type
(int, float, str, bool, tuple[T, ...], Literal, Optional, nested dataclasses) and refuses a
value of the wrong type instead of guessing. `to_mapping` is the inverse, for printing and
for writing a run's resolved configuration.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["ConfigError", "from_mapping", "to_mapping", "parse_value", "to_toml"]


class ConfigError(ValueError):
    """A configuration key that does not exist or holds a value of the wrong type."""


def from_mapping(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from `data`; missing keys keep their defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            known = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(f"unknown config key {path!r}; known keys here: {known}")
        kwargs[key] = _convert(hints[key], _over_default(fields[key], value), path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _over_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial table for a nested dataclass overrides that field's *default instance*, not
    the nested class's own defaults (e.g. `[embedding.optimizer] lr = 0.1` keeps the
    embedding section's chosen initial_accumulator)."""
    if not isinstance(value, Mapping):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    if not (dataclasses.is_dataclass(default) and not isinstance(default, type)):
        return value
    base = {g.name: getattr(default, g.name) for g in dataclasses.fields(default) if g.init}
    return {**base, **value}


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: value {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return from_mapping(tp, value, where=path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)  # 1e6 in TOML is a float; accept it when it is whole
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {tp}")  # pragma: no cover


def to_mapping(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (tuples become lists), recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def parse_value(text: str) -> Any:
    """Parse a `--set` value as a TOML value (`3`, `0.1`, `true`, `[1, 2]`, `"x"`); bare words are strings."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def to_toml(data: Mapping[str, Any]) -> str:
    """Render nested mappings as TOML (enough for configs: scalars, lists, tables; None is omitted)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(prefix: str, m: Mapping[str, Any]) -> None:
        arrays = {k: v for k, v in m.items()  # arrays of tables, e.g. [[data.features]]
                  if isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v)}
        simple = {k: v for k, v in m.items() if not isinstance(v, Mapping) and v is not None and k not in arrays}
        nested = {k: v for k, v in m.items() if isinstance(v, Mapping)}
        if prefix and (simple or not nested):
            lines.append(f"[{prefix}]")
        for k, v in simple.items():
            lines.append(f"{k} = {scalar(v)}")
        if prefix and (simple or not nested):
            lines.append("")
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)
        for k, items in arrays.items():
            for item in items:
                lines.append(f"[[{prefix}.{k}]]" if prefix else f"[[{k}]]")
                lines.extend(f"{ik} = {scalar(iv)}" for ik, iv in item.items() if iv is not None)
                lines.append("")

    table("", data)
    return "\n".join(lines).rstrip() + "\n"

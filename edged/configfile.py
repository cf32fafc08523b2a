"""Typed YAML configuration files, shared by both daemons.

A configuration is a dataclass whose fields carry their default and a
``doc`` in their metadata. :func:`load` reads a YAML mapping into it and
refuses unknown keys and wrong types with a message naming the file and the
key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file and key."""


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with a default and the documentation of its key."""
    return dataclasses.field(default=default, metadata={"doc": doc})


def _coerce(path: str, key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(path, key, value, args[0])
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: key {key!r} must be a non-empty path string")
        return Path(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: key {key!r} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: key {key!r} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: key {key!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: key {key!r} has an unsupported type {hint!r}")


def from_mapping(cls: type[T], data: Any, source: str = "<config>") -> T:
    """Build ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})"
        )
    values = {k: _coerce(source, k, v, hints[k]) for k, v in data.items()}
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        problem = validate()
        if problem:
            raise ConfigError(f"{source}: {problem}")
    return obj


def load(cls: type[T], path: Path) -> T:
    """Read the YAML file at ``path`` into ``cls``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return from_mapping(cls, data, str(path))


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """``(key, default, doc)`` for every key of ``cls``, for docs and tests."""
    return [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]

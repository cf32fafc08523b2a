"""Small helpers over marked YAML values (line lookup, type names for messages)."""

from __future__ import annotations

from typing import Any

from central.vnfd.yamlmarks import Map, Seq


def line_in(container: Any, key: Any) -> int | None:
    """The line of ``key`` in a Map (or index in a Seq), else the container's own line."""
    if isinstance(container, Map) and isinstance(key, str):
        return container.line_of(key)
    if isinstance(container, Seq) and isinstance(key, int):
        return container.line_of(key)
    return getattr(container, "line", None)


def kind(value: Any) -> str:
    """How a YAML value reads in an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

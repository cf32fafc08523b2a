"""Typed reads from marked YAML that record an error (naming what was expected) instead
of raising: every read returns None when the value is missing or wrong."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from central.vnfd import units
from central.vnfd.errors import At, Problems
from central.vnfd.source_view import kind, line_in
from central.vnfd.yamlmarks import Map

FUNCTIONS = frozenset(
    {
        "get_input",
        "get_property",
        "get_attribute",
        "get_artifact",
        "get_operation_output",
        "concat",
        "join",
        "token",
    }
)


def function_name(value: Any) -> str | None:
    """The TOSCA function a value calls (``{get_input: x}``), if it is one."""
    if isinstance(value, dict) and len(value) == 1:
        (name,) = value.keys()
        if name in FUNCTIONS:
            return str(name)
    return None


class Reader:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems

    def error(self, at: At, message: str) -> None:
        self.problems.error(at, message)

    def unsupported(self, at: At, feature: str) -> None:
        self.problems.unsupported(at, feature)

    def _plain(self, value: Any, at: At) -> bool:
        fn = function_name(value)
        if fn is not None:
            self.unsupported(at, f"TOSCA function {fn}")
            return False
        return True

    def child(self, m: Map, key: str, at: At) -> tuple[Any, At]:
        return m.get(key), at.key(key, line_in(m, key))

    def mapping(self, value: Any, at: At, what: str = "a mapping") -> Map | None:
        if isinstance(value, Map):
            for dup, line in value.duplicates:
                self.error(at.key(dup, line), "key given twice in the same mapping")
            return value
        if self._plain(value, at):
            self.error(at, f"expected {what}, got {kind(value)}")
        return None

    def get_map(
        self, m: Map, key: str, at: At, required: bool = False, what: str = "a mapping"
    ) -> tuple[Map | None, At]:
        value, cat = self.child(m, key, at)
        if value is None:
            if required:
                self.error(cat, f"missing: expected {what}")
            return None, cat
        return self.mapping(value, cat, what), cat

    def get_list(self, m: Map, key: str, at: At, required: bool = False) -> tuple[list | None, At]:
        value, cat = self.child(m, key, at)
        if value is None:
            if required:
                self.error(cat, "missing: expected a list")
            return None, cat
        if isinstance(value, list):
            return value, cat
        if self._plain(value, cat):
            self.error(cat, f"expected a list, got {kind(value)}")
        return None, cat

    def string(self, m: Map, key: str, at: At, required: bool = False) -> str | None:
        value, cat = self.child(m, key, at)
        return self.as_string(value, cat, required)

    def as_string(self, value: Any, at: At, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.error(at, "missing: expected a string")
            return None
        if isinstance(value, bool):
            self.error(at, f"expected a string, got {kind(value)}")
            return None
        if isinstance(value, str | int | float):
            return str(value)
        if self._plain(value, at):
            self.error(at, f"expected a string, got {kind(value)}")
        return None

    def integer(
        self,
        m: Map,
        key: str,
        at: At,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value, cat = self.child(m, key, at)
        return self.as_integer(value, cat, required, minimum, maximum)

    def as_integer(
        self,
        value: Any,
        at: At,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        if value is None:
            if required:
                self.error(at, "missing: expected an integer")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if self._plain(value, at):
                self.error(at, f"expected an integer, got {kind(value)}")
            return None
        if minimum is not None and value < minimum:
            self.error(at, f"expected an integer >= {minimum}, got {value}")
            return None
        if maximum is not None and value > maximum:
            self.error(at, f"expected an integer <= {maximum}, got {value}")
            return None
        return value

    def boolean(self, m: Map, key: str, at: At) -> bool | None:
        value, cat = self.child(m, key, at)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        if self._plain(value, cat):
            self.error(cat, f"expected true or false, got {kind(value)}")
        return None

    def size(self, m: Map, key: str, at: At, unit: int, required: bool = False) -> int | None:
        """A scalar-unit.size in whole MiB or GiB (``unit``), rounded up."""
        value, cat = self.child(m, key, at)
        if value is None:
            if required:
                self.error(cat, f"missing: expected {units.EXPECTED}")
            return None
        if not self._plain(value, cat):
            return None
        try:
            return units.size_in(value, unit)
        except units.BadSize as exc:
            self.error(cat, str(exc))
            return None

    def size_bytes(self, m: Map, key: str, at: At) -> int | None:
        value, cat = self.child(m, key, at)
        if value is None or not self._plain(value, cat):
            return None
        try:
            return units.size_bytes(value)
        except units.BadSize as exc:
            self.error(cat, str(exc))
            return None

    def choice(
        self, m: Map, key: str, at: At, choices: Iterable[str], required: bool = False
    ) -> str | None:
        value = self.string(m, key, at, required)
        options = list(choices)
        if value is not None and value not in options:
            self.error(
                at.key(key, line_in(m, key)), f"expected one of {', '.join(options)}, got {value!r}"
            )
            return None
        return value

    def names(self, value: Any, at: At) -> list[str] | None:
        """A list of names (``targets``, ``members``, ``step_deltas``)."""
        if not isinstance(value, list):
            if self._plain(value, at):
                self.error(at, f"expected a list of names, got {kind(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(at.item(i, line_in(value, i)), f"expected a name, got {kind(item)}")
                return None
            out.append(item)
        return out

    def only_keys(
        self, m: Map, at: At, read: Iterable[str], informational: Iterable[str], what: str
    ) -> None:
        """Keys neither read nor known informational are answered "unsupported"."""
        allowed = set(read) | set(informational)
        for key in m:
            if key not in allowed:
                self.unsupported(at.key(key, line_in(m, key)), f"{what} '{key}'")

"""YAML loading that keeps line numbers: mappings and lists come back as ``Map`` and
``Seq`` (plain dict/list subclasses) that know the line of each key and item. Safe
loading only (no Python tags); duplicate keys are remembered, not silently merged."""

from __future__ import annotations

from typing import Any

import yaml

try:  # the C loader when PyYAML has libyaml; nodes carry marks either way
    _Base: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Base = yaml.SafeLoader


class Map(dict[str, Any]):
    """A YAML mapping: ``line`` (its own, 1-based), ``key_lines`` and ``duplicates``."""

    line: int | None = None
    key_lines: dict[str, int]
    duplicates: list[tuple[str, int]]

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line) if hasattr(self, "key_lines") else self.line


class Seq(list[Any]):
    """A YAML sequence: ``line`` and ``item_lines``."""

    line: int | None = None
    item_lines: list[int]

    def line_of(self, index: int) -> int | None:
        lines = getattr(self, "item_lines", [])
        return lines[index] if 0 <= index < len(lines) else self.line


class _Loader(_Base):  # type: ignore[misc, valid-type]
    pass


def _mapping(loader: Any, node: yaml.MappingNode) -> Map:
    m = Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    m.duplicates = []
    loader.flatten_mapping(node)  # merge keys (<<) as the safe loader does
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            key = repr(key)  # unhashable keys only happen in nonsense; name them anyway
        key = "null" if key is None else str(key)
        line = key_node.start_mark.line + 1
        if key in m:
            m.duplicates.append((key, line))
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = line
    return m


def _sequence(loader: Any, node: yaml.SequenceNode) -> Seq:
    s = Seq(loader.construct_object(child, deep=True) for child in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [child.start_mark.line + 1 for child in node.value]
    return s


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


class YamlSyntaxError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def load(text: str | bytes) -> Any:
    """One YAML document with marks; ``YamlSyntaxError`` (with its line) when it is not
    YAML, or holds more than one document."""
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "not YAML"
        raise YamlSyntaxError(f"not valid YAML: {problem}", line) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        # e.g. an undecodable byte, a bad timestamp, an alias bomb too deep
        raise YamlSyntaxError(f"not valid YAML: {exc}".splitlines()[0], None) from None
    if len(docs) > 1:
        raise YamlSyntaxError("expected one YAML document, found several", None)
    return docs[0] if docs else None

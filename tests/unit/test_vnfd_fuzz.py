"""Hypothesis mutates valid descriptors (deletes keys, swaps types, puts random scalars
anywhere): the checker never raises, and every error names its file and path."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.vnfd import check_vnfd
from tests.unit.vnfd_support import SAMPLES, TEMPLATE_NAMES, template_doc, write_package

BASES = [template_doc(n) for n in TEMPLATE_NAMES] + [
    yaml.safe_load(
        (
            SAMPLES / "helloworld3-functional" / "Definitions" / "helloworld3_df_simple.yaml"
        ).read_text()
    )
]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "1 GiB",
            "0 MB",
            "x GB",
            "tosca.nodes.nfv.VduCp",
            "VDU1",
            "filter",
            "direct",
            "../x.yaml",
            "10.0.0.0/8",
        ]
    ),
)
REPLACEMENTS = st.one_of(
    SCALARS,
    st.just({}),
    st.just([]),
    st.just({"get_input": "x"}),
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{last}_x"] = parent.pop(last)
    else:
        parent[last] = value


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        candidates = paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        action = draw(st.sampled_from(["delete", "replace", "replace", "rename"]))
        mutate(doc, path, action, copy.deepcopy(draw(REPLACEMENTS)))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_never_crash_and_errors_are_placed(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_package(Path(tmp), doc)
        vnfd, errors = check_vnfd(root)
    assert (vnfd is None) == bool(errors)
    for e in errors:
        assert e.file.startswith("Definitions/") or e.file.endswith("TOSCA.meta"), e
        assert e.path, e
        assert e.message, e

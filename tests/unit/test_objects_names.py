"""Bucket names, object keys, metadata, and HLC stamps."""

from __future__ import annotations

import pytest

from edged.objects import names
from edged.objects.errors import ObjectError
from edged.objects.hlc import HybridClock, format_stamp, parse


@pytest.mark.parametrize("name", ["abc", "my-bucket.2", "a" * 63, "1.2.3.4x"])
def test_good_bucket_names(name: str) -> None:
    assert names.bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "Upper", "-lead", "trail.", "a..b", "a.-b", "under_score", "10.0.0.1", "é-b"],
)
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(ObjectError) as exc:
        names.bucket_name(name)
    assert (exc.value.field, exc.value.status) == ("bucket", 400)


@pytest.mark.parametrize("key", ["k", "a/b/c.txt", "ünïcode/ключ", "x" * 1024, "a/.hidden", "..."])
def test_good_keys(key: str) -> None:
    assert names.object_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "x" * 1025, "é" * 513, "a\x00b", "tab\there", "..", "a/../b", "./a", "a/.", "\ud800"],
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(ObjectError) as exc:
        names.object_key(key)
    assert exc.value.field == "key"


def test_metadata() -> None:
    headers = {"X-Object-Meta-Color": "red", "x-object-meta-size-hint": "3", "Other": "no"}
    assert names.metadata_from_headers(headers) == {"color": "red", "size-hint": "3"}
    with pytest.raises(ObjectError, match="a-z"):
        names.metadata({"bad_name": "x"})
    with pytest.raises(ObjectError, match="2048"):
        names.metadata({f"m{i}": "v" * 100 for i in range(20)})
    with pytest.raises(ObjectError, match="control"):
        names.metadata({"m": "a\nb"})
    assert len(names.metadata({"m": "v" * 2047})) == 1


def test_stamps_sort_in_clock_order() -> None:
    t = [1000.0]
    clock = HybridClock("site-a", wall=lambda: t[0])
    a, b = clock.now(), clock.now()
    assert a < b and parse(b).counter == 1
    t[0] = 999.0  # the wall clock stepped back: stamps still go forward
    c = clock.now()
    assert b < c and parse(c).wall_ms == 1_000_000
    later = format_stamp(5_000_000, 7, "site-z")
    clock.observe(later)
    d = clock.now()
    assert d > later and parse(d).wall_ms == 5_000_000 and parse(d).counter == 8
    assert len(a) == len(d)  # fixed width: text order is time order


def test_ties_break_by_node() -> None:
    assert format_stamp(1, 0, "site-a") < format_stamp(1, 0, "site-b")
    assert format_stamp(1, 0, "site-b") < format_stamp(1, 1, "site-a")
    assert format_stamp(1, 0, "zzz") < format_stamp(2, 0, "aaa")


@pytest.mark.parametrize(
    "junk", ["", "abc", "0" * 18, "0" * 18 + "-", "G" * 18 + "-n", 5, "0" * 18 + "-a b"]
)
def test_parse_refuses_junk(junk: object) -> None:
    with pytest.raises(ValueError, match="HLC stamp"):
        parse(junk)  # type: ignore[arg-type]


def test_bad_node_id() -> None:
    with pytest.raises(ValueError, match="node id"):
        HybridClock("has space")

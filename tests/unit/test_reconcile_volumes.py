"""The pure volume plan: reading the document's section, and the ordering rules."""

from __future__ import annotations

from pathlib import Path

import zmq

from edged.drivers.volume import ObservedVolume
from edged.reconcile_volumes import (
    VolumeAction,
    plan_volumes,
    volumes_from_document,
    waiting_reason,
)
from edged.sealed import open_sealed, seal

PUBLIC, SECRET = (k.decode() for k in zmq.curve_keypair())
OTHER_PUBLIC, _ = zmq.curve_keypair()


def opener(blob: str, volume_id: str) -> bytes:
    return open_sealed(SECRET, blob, volume_id)


def have(vid: str, size: int = 1, encrypted: bool = False) -> ObservedVolume:
    return ObservedVolume(vid, size, encrypted, Path(f"/v/{vid}.qcow2"))


def doc(*volumes: dict) -> dict:
    return {"volumes": [{"size_gb": 1, "encrypted": False, "source": None, **v} for v in volumes]}


def kinds(actions: list[VolumeAction]) -> list[tuple[str, ...]]:
    out = []
    for a in actions:
        extra = a.server_id or a.snapshot_id
        out.append((a.kind, a.volume_id, extra) if extra else (a.kind, a.volume_id))
    return out


def test_document_section_is_read() -> None:
    sealed = seal(PUBLIC, bytes(range(32)), "v1")
    d = volumes_from_document(
        doc(
            {
                "id": "v1",
                "encrypted": True,
                "key_sealed": sealed,
                "attached_to": "s1",
                "snapshots": ["p"],
            },
            {"id": "v2", "attached_to": "s1", "boot_index": 0, "source": {"image_id": "img"}},
            {"id": "v3", "source": {"snapshot_id": "p"}, "size_gb": 3},
        ),
        opener,
    )
    v1, v2, v3 = d.volumes["v1"], d.volumes["v2"], d.volumes["v3"]
    assert v1.key == bytes(range(32)) and v1.attached_to == "s1" and not v1.boot
    assert v1.snapshots == ("p",)
    assert v2.boot and v2.source_image == "img"
    assert v3.source_snapshot == "p" and v3.size_gb == 3
    assert d.snapshots == {"p": "v1"}
    assert d.keep() == {"v1", "v2", "v3", "p"}
    assert volumes_from_document(None).volumes == {}


def test_unreadable_entries_are_kept_aside_and_never_deleted() -> None:
    key = bytes(range(32))
    d = volumes_from_document(
        doc(
            {"id": "nokey", "encrypted": True},
            {"id": "badkey", "encrypted": True, "key_sealed": "!!not base64!!"},
            # Sealed to another site, or to another volume of this one: does not open.
            {
                "id": "elsewhere",
                "encrypted": True,
                "key_sealed": seal(OTHER_PUBLIC.decode(), key, "elsewhere"),
            },
            {"id": "moved", "encrypted": True, "key_sealed": seal(PUBLIC, key, "ok")},
            {"id": "badsize", "size_gb": "big"},
            {"id": "ok"},
        ),
        opener,
    )
    assert set(d.volumes) == {"ok"}
    assert set(d.unreadable) == {"nokey", "badkey", "elsewhere", "moved", "badsize"}
    assert "key" in d.unreadable["nokey"] and "!!" not in d.unreadable["badkey"]
    assert "does not open" in d.unreadable["elsewhere"] and "does not open" in d.unreadable["moved"]
    no_secret = volumes_from_document(doc({"id": "e", "encrypted": True, "key_sealed": "x"}))
    assert "no key" in no_secret.unreadable["e"]
    observed = {
        vid: have(vid) for vid in ("nokey", "badkey", "elsewhere", "moved", "badsize", "ok")
    }
    assert plan_volumes(d, observed, {}, servers=set()) == []


def test_create_then_attach_in_a_later_plan() -> None:
    d = volumes_from_document(doc({"id": "v1", "attached_to": "s1"}))
    first = plan_volumes(d, {}, {}, servers={"s1"})
    assert kinds(first) == [("create", "v1")]
    second = plan_volumes(d, {"v1": have("v1")}, {}, servers={"s1"})
    assert kinds(second) == [("attach", "v1", "s1")]
    done = plan_volumes(d, {"v1": have("v1")}, {"s1": {"v1"}}, servers={"s1"})
    assert done == []
    # A server that is not there (yet) gets nothing attached.
    assert plan_volumes(d, {"v1": have("v1")}, {}, servers=set()) == []


def test_detach_before_delete_and_delete_waits_for_the_detach() -> None:
    d = volumes_from_document(doc({"id": "keep"}))
    observed = {"keep": have("keep"), "gone": have("gone")}
    actions = plan_volumes(d, observed, {"s1": {"keep", "gone"}}, servers={"s1"})
    # "gone" is still in s1's domain: detached now, deleted once it is out.
    assert kinds(actions) == [("detach", "gone", "s1"), ("detach", "keep", "s1")]
    later = plan_volumes(d, observed, {}, servers={"s1"})
    assert kinds(later) == [("delete", "gone")]


def test_a_going_server_detaches_by_going() -> None:
    d = volumes_from_document(doc({"id": "v1"}))
    observed = {"v1": have("v1"), "old": have("old")}
    attached = {"s1": {"v1", "old"}}
    # s1 is deleted this pass (or not desired): no hot-unplug, the delete may go ahead.
    for kw in ({"servers": {"s1"}, "going": {"s1"}}, {"servers": set()}):
        actions = plan_volumes(d, observed, attached, **kw)  # type: ignore[arg-type]
        assert kinds(actions) == [("delete", "old")]


def test_move_between_servers_detaches_first() -> None:
    d = volumes_from_document(doc({"id": "v1", "attached_to": "s2"}))
    observed = {"v1": have("v1")}
    actions = plan_volumes(d, observed, {"s1": {"v1"}}, servers={"s1", "s2"})
    assert kinds(actions) == [("detach", "v1", "s1")]  # attach once it is out of s1
    assert kinds(plan_volumes(d, observed, {}, servers={"s1", "s2"})) == [("attach", "v1", "s2")]


def test_boot_volumes_are_never_hot_plugged() -> None:
    d = volumes_from_document(doc({"id": "root", "attached_to": "s1", "boot_index": 0}))
    assert plan_volumes(d, {"root": have("root")}, {}, servers={"s1"}) == []
    assert plan_volumes(d, {"root": have("root")}, {"s1": {"root"}}, servers={"s1"}) == []
    assert kinds(plan_volumes(d, {}, {}, servers=set())) == [("create", "root")]


def test_extend_and_snapshot_only_when_free() -> None:
    d = volumes_from_document(doc({"id": "v1", "size_gb": 3, "snapshots": ["p1"]}))
    observed = {"v1": have("v1", 1)}
    assert kinds(plan_volumes(d, observed, {}, servers=set())) == [
        ("extend", "v1"),
        ("snapshot", "v1", "p1"),
    ]
    assert plan_volumes(d, observed, {"s1": {"v1"}}, servers={"s1"}) != []  # a detach
    assert all(
        a.kind == "detach" for a in plan_volumes(d, observed, {"s1": {"v1"}}, servers={"s1"})
    )
    bigger = {"v1": have("v1", 5), "p1": have("p1")}
    assert plan_volumes(d, bigger, {}, servers=set()) == []  # never shrinks


def test_volume_from_snapshot_waits_for_it() -> None:
    d = volumes_from_document(
        doc({"id": "v1", "snapshots": ["p1"]}, {"id": "v2", "source": {"snapshot_id": "p1"}})
    )
    observed = {"v1": have("v1")}
    assert kinds(plan_volumes(d, observed, {}, servers=set())) == [("snapshot", "v1", "p1")]
    assert waiting_reason(d.volumes["v2"], observed) == "snapshot p1 is not at this site yet"
    observed["p1"] = have("p1")
    assert kinds(plan_volumes(d, observed, {}, servers=set())) == [("create", "v2")]
    assert waiting_reason(d.volumes["v2"], observed) == ""


def test_failed_create_is_not_retried_for_the_same_spec() -> None:
    d = volumes_from_document(doc({"id": "v1"}))
    build = d.volumes["v1"].build_hash()
    assert plan_volumes(d, {}, {}, servers=set(), failed={"v1": build}) == []
    bigger = volumes_from_document(doc({"id": "v1", "size_gb": 2}))
    assert kinds(plan_volumes(bigger, {}, {}, servers=set(), failed={"v1": build})) == [
        ("create", "v1")
    ]


def test_order_over_many() -> None:
    d = volumes_from_document(
        doc(
            {"id": "new", "attached_to": "s1"},
            {"id": "grow", "size_gb": 2, "attached_to": "s1"},
            {"id": "snap", "snapshots": ["p"]},
        )
    )
    observed = {"grow": have("grow"), "snap": have("snap"), "old": have("old")}
    actions = plan_volumes(d, observed, {}, servers={"s1"})
    assert kinds(actions) == [
        ("delete", "old"),
        ("create", "new"),
        ("extend", "grow"),
        ("snapshot", "snap", "p"),
        ("attach", "grow", "s1"),
    ]

"""``skerry volumes ...`` and ``servers create --boot-volume``, over HTTP against the real
app (the same harness as the networking CLI tests)."""

from __future__ import annotations

from central import orchestrator
from tests.unit.identity_support import store_of
from tests.unit.test_cli_network import Skerry, skerry, table  # noqa: F401 - the fixture


async def test_volume_lifecycle(skerry: Skerry) -> None:  # noqa: F811
    vol = await skerry.json("volumes", "create", "data", "--site", "edge-a", "--size", "1",
                            "--encrypted")  # fmt: skip
    assert vol["encrypted"] is True and vol["status"] == "BUILD" and "key" not in vol
    server = await skerry.json("servers", "create", "vm1", "--site", "edge-a")
    rows = table(await skerry.ok("volumes", "list"))
    assert [(r["id"], r["name"], r["size_gb"], r["server"]) for r in rows] == [
        (vol["id"][:8], "data", "1", "-")
    ]
    attached = await skerry.json("volumes", "attach", vol["id"], server["id"])
    assert attached["server_id"] == server["id"]
    err = await skerry.fails("volumes", "delete", vol["id"])
    assert "detach it first" in err
    await skerry.json("volumes", "detach", vol["id"])
    assert (await skerry.json("volumes", "extend", vol["id"], "2"))["size_gb"] == 2
    snap = await skerry.json("volumes", "snapshot", vol["id"], "s1")
    rows = table(await skerry.ok("volumes", "snapshots", vol["id"]))
    assert [(r["id"], r["name"]) for r in rows] == [(snap["id"], "s1")]
    copy = await skerry.json("volumes", "create", "copy", "--site", "edge-a", "--size", "2",
                             "--snapshot", snap["id"])  # fmt: skip
    assert copy["snapshot_id"] == snap["id"] and copy["encrypted"] is True
    booted = await skerry.json("servers", "create", "vm2", "--site", "edge-a",
                               "--boot-volume", copy["id"])  # fmt: skip
    assert booted["boot_volume_id"] == copy["id"]
    shown = await skerry.json("volumes", "show", copy["id"])
    assert shown["boot"] is True and shown["server_id"] == booted["id"]
    # The snapshot goes once the copy is made (the site says so).
    generation = store_of(skerry.app).one(
        "SELECT desired_generation AS g FROM sites WHERE name = 'edge-a'"
    )["g"]  # type: ignore[index]
    orchestrator.apply_status(store_of(skerry.app), "edge-a", generation,
                              {"volumes": {copy["id"]: {"state": "in-use"}}})  # fmt: skip
    gone = await skerry.json("volumes", "snapshot-delete", vol["id"], snap["id"])
    assert gone["status"] == "DELETING"
    assert (await skerry.json("volumes", "delete", vol["id"]))["status"] == "DELETING"

"""/v1/volumes through the real app and store: project scope, the document's volumes
section (keys only there), attach rules, snapshots, boot from volume, status from the site,
and a key that shows up nowhere but, sealed to the site, the document."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
import zmq

from central import orchestrator
from edged.sealed import SealError, open_sealed
from tests.unit.identity_support import FLAVOR, make_app, ok, store_of
from tests.unit.network_support import Cloud, document, make_cloud, refused

PUBLIC, SECRET = (k.decode() for k in zmq.curve_keypair())


@pytest.fixture
async def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Sites edge-a (CURVE key enrolled) and edge-b (none yet), two projects."""
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        made = await make_cloud(app)
        await ok(await made.admin.put("/v1/sites/edge-a/key", json={"public_key": PUBLIC}))
        yield made


def key_of(entry: dict[str, Any] | None, secret: str = SECRET) -> bytes:
    """The volume key of a document entry, opened as its site opens it."""
    assert entry is not None
    return open_sealed(secret, entry["key_sealed"], entry["id"])


async def volume(client, **kw: Any) -> dict[str, Any]:
    body = {"name": "data", "site": "edge-a", "size_gb": 1, **kw}
    return await ok(await client.post("/v1/volumes", json=body), 202)


async def server(client, site: str = "edge-a", **kw: Any) -> dict[str, Any]:
    body = {"name": "vm1", "site": site, "flavor": FLAVOR, "image": "tiny", **kw}
    return await ok(await client.post("/v1/servers", json=body), 202)


def doc_volume(cloud: Cloud, volume_id: str, site: str = "edge-a") -> dict[str, Any] | None:
    _, doc = document(cloud.app, site)
    return next((v for v in doc["volumes"] if v["id"] == volume_id), None)


def report(cloud: Cloud, resources: dict[str, Any], site: str = "edge-a") -> None:
    generation, _ = document(cloud.app, site)
    orchestrator.apply_status(store_of(cloud.app), site, generation, resources)


async def test_create_list_show_scoped_and_keyed(cloud: Cloud) -> None:
    plain = await volume(cloud.member)
    assert plain["status"] == "BUILD" and plain["encrypted"] is False
    assert plain["server_id"] is None and plain["size_gb"] == 1
    enc = await volume(cloud.member, name="secret", encrypted=True, size_gb=2)
    assert enc["encrypted"] is True and "key" not in enc
    theirs = await volume(cloud.other, name="theirs")

    listed = await ok(await cloud.member.get("/v1/volumes"))
    assert {v["id"] for v in listed["volumes"]} == {plain["id"], enc["id"]}
    assert len((await ok(await cloud.admin.get("/v1/volumes")))["volumes"]) == 3
    assert (await cloud.member.get(f"/v1/volumes/{theirs['id']}")).status_code == 404
    assert (await cloud.reader.get(f"/v1/volumes/{plain['id']}")).status_code == 200
    resp = await cloud.reader.post("/v1/volumes", json={"name": "x", "site": "edge-a",
                                                        "size_gb": 1})  # fmt: skip
    assert resp.status_code == 403

    entry = doc_volume(cloud, enc["id"])
    assert entry is not None
    assert len(key_of(entry)) == 32
    assert {k: entry[k] for k in ("size_gb", "encrypted", "source", "snapshots")} == {
        "size_gb": 2, "encrypted": True, "source": None, "snapshots": []
    }  # fmt: skip
    assert "key_sealed" not in (doc_volume(cloud, plain["id"]) or {})
    assert "attached_to" not in entry
    _, other_doc = document(cloud.app, "edge-b")
    assert other_doc["volumes"] == []
    again = await volume(cloud.member, name="secret2", encrypted=True)
    assert key_of(doc_volume(cloud, again["id"])) != key_of(entry)
    # A site without an enrolled key gets no key (it reports the volume in error).
    elsewhere = await volume(cloud.member, name="b", site="edge-b", encrypted=True)
    assert "key_sealed" not in (doc_volume(cloud, elsewhere["id"], "edge-b") or {})


async def test_bad_bodies_are_400_and_change_nothing(cloud: Cloud) -> None:
    for body, field in (
        ({"name": "d", "site": "edge-a", "size_gb": 0}, "size_gb"),
        ({"name": "d", "site": "edge-a", "size_gb": 5000}, "size_gb"),
        ({"name": "d", "site": "edge-a", "size_gb": 1, "colour": "red"}, "colour"),
        ({"name": "d", "site": "edge-a", "size_gb": 1, "image_id": "a/b"}, "image_id"),
        ({"name": "d", "site": "edge-a", "size_gb": 1, "image_id": "i", "snapshot_id": "s"},
         "snapshot_id"),
    ):  # fmt: skip
        await refused(cloud.member, "POST", "/v1/volumes", 400, field, json=body)
    await refused(
        cloud.member, "POST", "/v1/volumes", 409, "image_id",
        json={"name": "d", "site": "edge-a", "size_gb": 1, "image_id": "nope"},
    )  # fmt: skip
    resp = await cloud.member.post("/v1/volumes", json={"name": "d", "site": "nowhere",
                                                        "size_gb": 1})  # fmt: skip
    assert resp.status_code == 404


async def test_attach_rules_and_detach(cloud: Cloud) -> None:
    vol = await volume(cloud.member)
    here = await server(cloud.member)
    there = await server(cloud.member, site="edge-b")
    theirs = await server(cloud.other)
    path = f"/v1/volumes/{vol['id']}/attach"
    for target in (there["id"], theirs["id"], "no-such-server"):
        await refused(cloud.member, "POST", path, 409, "server_id", json={"server_id": target})
    await refused(cloud.member, "POST", path, 400, "server_id", json={"server_id": "a b"})
    # The cloud admin sees every server, but a volume stays in its project.
    await refused(cloud.admin, "POST", path, 409, "server_id", json={"server_id": theirs["id"]})

    attached = await ok(await cloud.member.post(path, json={"server_id": here["id"]}), 202)
    assert attached["server_id"] == here["id"] and attached["boot"] is False
    assert doc_volume(cloud, vol["id"])["attached_to"] == here["id"]  # type: ignore[index]
    # Attaching again to the same server changes nothing; to another is refused.
    await ok(await cloud.member.post(path, json={"server_id": here["id"]}), 202)
    other = await server(cloud.member, name="vm2")
    await refused(cloud.member, "POST", path, 409, "server_id", json={"server_id": other["id"]})
    vid = vol["id"]
    await refused(cloud.member, "DELETE", f"/v1/volumes/{vid}", 409, "server_id")
    await refused(cloud.member, "POST", f"/v1/volumes/{vid}/extend", 409, "server_id",
                  json={"size_gb": 2})  # fmt: skip
    await refused(cloud.member, "POST", f"/v1/volumes/{vid}/snapshots", 409, "server_id",
                  json={"name": "s"})  # fmt: skip

    report(cloud, {"volumes": {vid: {"state": "in-use", "reason": "", "attached_to": here["id"],
                                     "size_gb": 1}}})  # fmt: skip
    shown = await ok(await cloud.member.get(f"/v1/volumes/{vid}"))
    assert (shown["status"], shown["attached_to"], shown["site_size_gb"]) == (
        "IN_USE", here["id"], 1
    )  # fmt: skip

    detached = await ok(await cloud.member.post(f"/v1/volumes/{vid}/detach"), 202)
    assert detached["server_id"] is None
    assert "attached_to" not in doc_volume(cloud, vid)  # type: ignore[operator]
    await refused(cloud.member, "POST", f"/v1/volumes/{vid}/detach", 409, "server_id")


async def test_extend_grows_only(cloud: Cloud) -> None:
    vol = await volume(cloud.member, size_gb=2)
    path = f"/v1/volumes/{vol['id']}/extend"
    await refused(cloud.member, "POST", path, 400, "size_gb", json={"size_gb": 1})
    grown = await ok(await cloud.member.post(path, json={"size_gb": 3}), 202)
    assert grown["size_gb"] == 3
    assert doc_volume(cloud, vol["id"])["size_gb"] == 3  # type: ignore[index]


async def test_snapshots_and_volumes_from_them(cloud: Cloud) -> None:
    vol = await volume(cloud.member, encrypted=True, size_gb=2)
    vid = vol["id"]
    snap = await ok(
        await cloud.member.post(f"/v1/volumes/{vid}/snapshots", json={"name": "s1"}), 202
    )
    assert (snap["status"], snap["size_gb"], snap["encrypted"]) == ("BUILD", 2, True)
    assert doc_volume(cloud, vid)["snapshots"] == [snap["id"]]  # type: ignore[index]
    listed = await ok(await cloud.member.get(f"/v1/volumes/{vid}/snapshots"))
    assert [s["id"] for s in listed["snapshots"]] == [snap["id"]]
    assert (await cloud.other.get(f"/v1/volumes/{vid}/snapshots")).status_code == 404
    await refused(cloud.member, "DELETE", f"/v1/volumes/{vid}", 409, "snapshots")

    from_snap = {"name": "copy", "size_gb": 2, "snapshot_id": snap["id"]}
    await refused(cloud.member, "POST", "/v1/volumes", 409, "snapshot_id",
                  json={**from_snap, "site": "edge-b"})  # fmt: skip
    await refused(cloud.other, "POST", "/v1/volumes", 409, "snapshot_id",
                  json={**from_snap, "site": "edge-a"})  # fmt: skip
    await refused(cloud.member, "POST", "/v1/volumes", 400, "size_gb",
                  json={**from_snap, "site": "edge-a", "size_gb": 1})  # fmt: skip
    await refused(cloud.member, "POST", "/v1/volumes", 400, "encrypted",
                  json={**from_snap, "site": "edge-a", "encrypted": False})  # fmt: skip
    copy = await volume(cloud.member, **{**from_snap, "size_gb": 3})
    assert copy["encrypted"] is True and copy["snapshot_id"] == snap["id"]
    entry = doc_volume(cloud, copy["id"])
    assert entry is not None and entry["source"] == {"snapshot_id": snap["id"]}
    assert key_of(entry) == key_of(doc_volume(cloud, vid))

    # While the copy is being made its snapshot stays.
    spath = f"/v1/volumes/{vid}/snapshots/{snap['id']}"
    await refused(cloud.member, "DELETE", spath, 409, "volumes")
    report(cloud, {"volumes": {copy["id"]: {"state": "available"}, vid: {"state": "available"}},
                   "snapshots": {snap["id"]: {"state": "available"}}})  # fmt: skip
    assert (await ok(await cloud.member.get(spath)))["status"] == "AVAILABLE"
    gone = await ok(await cloud.member.delete(spath), 202)
    assert gone["status"] == "DELETING"
    assert doc_volume(cloud, vid)["snapshots"] == []  # type: ignore[index]
    report(cloud, {"volumes": {copy["id"]: {"state": "available"}, vid: {"state": "available"}}})
    assert (await cloud.member.get(spath)).status_code == 404

    deleted = await ok(await cloud.member.delete(f"/v1/volumes/{vid}"), 202)
    assert deleted["status"] == "DELETING"
    assert doc_volume(cloud, vid) is None
    report(cloud, {"volumes": {vid: {"state": "available"}}})  # not gone at the site yet
    assert (await cloud.member.get(f"/v1/volumes/{vid}")).status_code == 200
    report(cloud, {"volumes": {}})
    assert (await cloud.member.get(f"/v1/volumes/{vid}")).status_code == 404


async def test_boot_from_volume(cloud: Cloud) -> None:
    vol = await volume(cloud.member, size_gb=1)
    there = await volume(cloud.member, site="edge-b")
    theirs = await volume(cloud.other)
    for vid in (there["id"], theirs["id"]):
        body = {"name": "vm1", "site": "edge-a", "flavor": FLAVOR, "image": "tiny",
                "boot_volume_id": vid}  # fmt: skip
        await refused(cloud.member, "POST", "/v1/servers", 409, "boot_volume_id", json=body)
    srv = await server(cloud.member, boot_volume_id=vol["id"])
    assert srv["boot_volume_id"] == vol["id"]
    _, doc = document(cloud.app)
    assert doc["servers"][0]["boot_volume"] == vol["id"]
    entry = doc_volume(cloud, vol["id"])
    assert entry is not None and (entry["attached_to"], entry["boot_index"]) == (srv["id"], 0)
    shown = await ok(await cloud.member.get(f"/v1/volumes/{vol['id']}"))
    assert shown["boot"] is True and shown["server_id"] == srv["id"]
    await refused(cloud.member, "POST", f"/v1/volumes/{vol['id']}/detach", 409, "server_id")
    body = {"name": "vm2", "site": "edge-a", "flavor": FLAVOR, "image": "tiny",
            "boot_volume_id": vol["id"]}  # fmt: skip
    await refused(cloud.member, "POST", "/v1/servers", 409, "boot_volume_id", json=body)

    # Deleting the server frees its root volume once the site reports the server gone.
    await ok(await cloud.member.delete(f"/v1/servers/{srv['id']}"), 202)
    assert "attached_to" not in doc_volume(cloud, vol["id"])  # type: ignore[operator]
    report(cloud, {"servers": {}, "volumes": {vol["id"]: {"state": "available"}}})
    shown = await ok(await cloud.member.get(f"/v1/volumes/{vol['id']}"))
    assert (shown["server_id"], shown["boot"], shown["status"]) == (None, False, "AVAILABLE")


async def test_malformed_reports_count_as_unseen(cloud: Cloud) -> None:
    vol = await volume(cloud.member)
    for bad in ({"volumes": []}, {"volumes": {vol["id"]: "x"}}, {"volumes": {vol["id"]: {
            "state": 3, "size_gb": "big", "attached_to": 5}}}, "junk"):  # fmt: skip
        report(cloud, bad)  # type: ignore[arg-type]
        shown = await ok(await cloud.member.get(f"/v1/volumes/{vol['id']}"))
        assert (shown["status"], shown["site_size_gb"], shown["attached_to"]) == (
            "BUILD", None, None
        )  # fmt: skip
    report(cloud, {"volumes": {vol["id"]: {"state": "error", "reason": "disk full"}}})
    shown = await ok(await cloud.member.get(f"/v1/volumes/{vol['id']}"))
    assert (shown["status"], shown["reason"]) == ("ERROR", "disk full")


async def test_key_is_only_in_the_document(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[bytes] = []
    vol = await volume(cloud.member, encrypted=True)
    srv = await server(cloud.member)
    vid = vol["id"]
    for method, path, body in (
        ("GET", f"/v1/volumes/{vid}", None),
        ("GET", "/v1/volumes", None),
        ("POST", f"/v1/volumes/{vid}/attach", {"server_id": srv["id"]}),
        ("POST", f"/v1/volumes/{vid}/detach", None),
        ("POST", f"/v1/volumes/{vid}/extend", {"size_gb": 2}),
        ("POST", f"/v1/volumes/{vid}/snapshots", {"name": "s"}),
        ("GET", f"/v1/volumes/{vid}/snapshots", None),
        ("GET", "/openapi.json", None),
    ):
        resp = await cloud.member.open(path, method=method, json=body)
        assert resp.status_code < 300, (path, await resp.get_data())
        seen.append(await resp.get_data())
    raw = key_of(doc_volume(cloud, vid))
    key = base64.b64encode(raw).decode()
    assert store_of(cloud.app).one("SELECT key FROM volumes WHERE id = ?", (vid,)) == {"key": key}
    audit = store_of(cloud.app).query("SELECT * FROM audit")
    assert any("volume_id=" in str(row["target"]) for row in audit)
    haystacks = [*seen, repr(audit).encode(), caplog.text.encode()]
    haystacks += [p.read_bytes() for p in tmp_path.rglob("*.jsonl")]
    # The stored documents hold the key sealed only.
    haystacks += [repr(store_of(cloud.app).query("SELECT * FROM desired_docs")).encode()]
    for hay in haystacks:
        assert key.encode() not in hay and raw not in hay and raw.hex().encode() not in hay


async def test_a_new_site_key_reseals_the_volume_keys(cloud: Cloud) -> None:
    vol = await volume(cloud.member, encrypted=True)
    before, _ = document(cloud.app)
    key = key_of(doc_volume(cloud, vol["id"]))
    public, secret = (k.decode() for k in zmq.curve_keypair())
    await ok(await cloud.admin.put("/v1/sites/edge-a/key", json={"public_key": public}))
    after, _ = document(cloud.app)
    assert after == before + 1
    entry = doc_volume(cloud, vol["id"])
    assert key_of(entry, secret) == key
    with pytest.raises(SealError):
        key_of(entry, SECRET)
    # A site with no encrypted volumes gets no new document for a new key.
    gen_b, _ = document(cloud.app, "edge-b")
    public_b, _ = zmq.curve_keypair()
    await ok(await cloud.admin.put("/v1/sites/edge-b/key", json={"public_key": public_b.decode()}))
    assert document(cloud.app, "edge-b")[0] == gen_b

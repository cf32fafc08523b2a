"""The object API at central: buckets with a replication policy, streamed objects, scoping."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from quart import Quart

from central import orchestrator
from tests.unit.identity_support import (
    PASSWORD,
    TokenClient,
    client_with,
    login,
    make_project,
    make_user,
    ok,
    store_of,
)
from tests.unit.objects_http_support import obj, put_object

DATA = os.urandom(200 * 1024 + 3)


@pytest.fixture
async def users(app: Quart, admin: TokenClient) -> dict[str, TokenClient]:
    """alice (member of p1), bob (reader of p1), carol (member of p2); sites edge-a, edge-b."""
    p1 = await make_project(admin, "p1")
    p2 = await make_project(admin, "p2")
    await make_user(admin, "alice", p1["id"])
    await make_user(admin, "bob", p1["id"], role="reader")
    await make_user(admin, "carol", p2["id"])
    for site in ("edge-a", "edge-b", "edge-c"):
        await ok(await admin.post("/v1/sites", json={"name": site}), 201)
    out = {"admin": admin}
    for user, project in (("alice", "p1"), ("bob", "p1"), ("carol", "p2")):
        out[user] = client_with(app, (await login(app, user, PASSWORD, project))["token"])
    return out


async def make_bucket(client: TokenClient, name: str = "photos", **policy: object) -> dict:
    body = {"sites": ["edge-a", "edge-b"], "replicate_to_central": True, "peers": True}
    body.update(policy)
    return (await ok(await client.put(f"/v1/buckets/{name}", json=body), 201))["bucket"]


async def test_bucket_policy_reaches_the_listed_sites(
    app: Quart, users: dict[str, TokenClient]
) -> None:
    made = await make_bucket(users["alice"])
    assert made["policy"] == {
        "sites": ["edge-a", "edge-b"],
        "replicate_to_central": True,
        "peers": True,
    }
    assert (made["objects"], made["bytes"], made["orphaned"]) == (0, 0, False)
    store = store_of(app)
    _, doc_a = orchestrator.latest_document(store, "edge-a")
    _, doc_b = orchestrator.latest_document(store, "edge-b")
    project = made["project_id"]
    assert doc_a["buckets"] == [
        {"name": "photos", "project_id": project, "replicate_to_central": True, "peers": ["edge-b"]}
    ]
    assert doc_b["buckets"][0]["peers"] == ["edge-a"]
    assert orchestrator.latest_document(store, "edge-c")[1]["buckets"] == []
    await ok(await users["alice"].delete("/v1/buckets/photos"), 204)
    assert orchestrator.latest_document(store, "edge-a")[1]["buckets"] == []
    assert store.query("SELECT * FROM buckets") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sites": ["nowhere"]}, "sites"),
        ({"sites": "edge-a"}, "sites"),
        ({"sites": ["edge-a", "edge-a"]}, "sites"),
        ({"peers": "yes"}, "peers"),
        ({"colour": "red"}, "colour"),
        ([1, 2], "(body)"),
    ],
)
async def test_bad_policies_are_400_and_leave_nothing(
    app: Quart, users: dict[str, TokenClient], body: object, field: str
) -> None:
    resp = await users["alice"].put("/v1/buckets/photos", json=body)
    got = await ok(resp, 400)
    assert got["error"]["details"]["fields"][0]["field"] == field
    assert store_of(app).query("SELECT * FROM buckets") == []
    assert (await ok(await users["alice"].get("/v1/buckets")))["buckets"] == []


async def test_bad_bucket_name_and_taken_name(users: dict[str, TokenClient]) -> None:
    got = await ok(await users["alice"].put("/v1/buckets/Bad_Name", json={}), 400)
    assert got["error"]["details"]["fields"][0]["field"] == "bucket"
    await make_bucket(users["alice"])
    await ok(await users["carol"].put("/v1/buckets/photos", json={}), 409)


async def test_objects_round_trip(users: dict[str, TokenClient]) -> None:
    alice = users["alice"]
    await make_bucket(alice)
    meta = {"X-Object-Meta-Camera": "pinhole"}
    status, body, headers = await put_object(alice, obj("photos", "2024/a.jpg"), DATA, meta)
    etag = hashlib.sha256(DATA).hexdigest()
    assert status == 201 and body["object"]["etag"] == etag
    assert headers["ETag"] == f'"{etag}"'

    resp = await alice.get(obj("photos", "2024/a.jpg"))
    assert resp.status_code == 200 and await resp.get_data() == DATA
    assert resp.headers["ETag"] == f'"{etag}"'
    assert resp.headers["X-Object-Meta-Camera"] == "pinhole"
    assert resp.headers["Content-Length"] == str(len(DATA))

    resp = await alice.head(obj("photos", "2024/a.jpg"))
    # (Quart's test client recomputes Content-Length from the empty body of a HEAD.)
    assert resp.status_code == 200 and resp.headers["ETag"] == f'"{etag}"'
    assert await resp.get_data() == b""

    resp = await alice.get(obj("photos", "2024/a.jpg"), headers={"Range": "bytes=10-19"})
    assert resp.status_code == 206 and await resp.get_data() == DATA[10:20]
    assert resp.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    resp = await alice.get(obj("photos", "2024/a.jpg"), headers={"Range": "bytes=-5"})
    assert resp.status_code == 206 and await resp.get_data() == DATA[-5:]
    resp = await alice.get(obj("photos", "2024/a.jpg"), headers={"Range": f"bytes={len(DATA)}-"})
    assert resp.status_code == 416 and resp.headers["Content-Range"] == f"bytes */{len(DATA)}"

    resp = await alice.get(obj("photos", "2024/a.jpg"), headers={"If-None-Match": f'"{etag}"'})
    assert resp.status_code == 304
    status, body, _ = await put_object(
        alice, obj("photos", "2024/a.jpg"), b"x", {"If-None-Match": "*"}
    )
    assert status == 412

    await ok(await alice.delete(obj("photos", "2024/a.jpg")), 204)
    await ok(await alice.get(obj("photos", "2024/a.jpg")), 404)
    await ok(await alice.delete(obj("photos", "2024/a.jpg")), 404)


async def test_list_with_prefix_and_pagination(users: dict[str, TokenClient]) -> None:
    alice = users["alice"]
    await make_bucket(alice)
    for key in ("a/1", "a/2", "a/3", "b/1"):
        assert (await put_object(alice, obj("photos", key), key.encode()))[0] == 201
    page = await ok(await alice.get("/v1/buckets/photos?prefix=a/&limit=2"))
    assert [o["key"] for o in page["objects"]] == ["a/1", "a/2"]
    assert page["next_marker"] == "a/2" and page["bucket"]["objects"] == 4
    page = await ok(await alice.get("/v1/buckets/photos?prefix=a/&limit=2&marker=a/2"))
    assert [o["key"] for o in page["objects"]] == ["a/3"] and page["next_marker"] is None
    await ok(await alice.get("/v1/buckets/photos?limit=zero"), 400)
    await ok(await alice.delete("/v1/buckets/photos"), 409)


@pytest.mark.parametrize(
    ("headers", "length", "field"),
    [
        ({}, len(DATA) - 1, "Content-Length"),
        ({}, len(DATA) + 1, "Content-Length"),
        ({"X-Content-Sha256": "0" * 64}, None, "X-Content-Sha256"),
        ({"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="}, None, "Content-MD5"),
        ({"X-Object-Meta-Big": "x" * 3000}, None, "X-Object-Meta-*"),
        ({"X-Object-Meta-bad_name": "x"}, None, "X-Object-Meta-bad_name"),
    ],
)
async def test_lying_uploads_are_400_and_leave_nothing(
    app: Quart, users: dict[str, TokenClient], headers: dict, length: int | None, field: str
) -> None:
    await make_bucket(users["alice"])
    status, body, _ = await put_object(
        users["alice"], obj("photos", "k"), DATA, headers, length=length
    )
    assert status == 400, body
    assert body["error"]["details"]["fields"][0]["field"] == field
    objects = app.extensions["skerry.objects"]
    assert list(objects.backend.blob_ids()) == []
    assert objects.index.query("SELECT * FROM versions") == []
    assert not list(Path(objects.backend.root).glob("*/.tmp-*"))


async def test_bad_keys_are_400(users: dict[str, TokenClient]) -> None:
    await make_bucket(users["alice"])
    status, body, _ = await put_object(users["alice"], obj("photos", "a/../b"), b"x")
    assert status in (400, 404)  # the router may normalise '..' away before we see it
    status, body, _ = await put_object(users["alice"], obj("photos", "x" * 1100), b"x")
    assert status == 400 and body["error"]["details"]["fields"][0]["field"] == "key"


async def test_large_upload_passes_the_body_limit_but_not_object_max(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.identity_support import admin_client, make_app

    app = make_app(tmp_path, monkeypatch, object_max_bytes=3 * 1024 * 1024)
    async with app.test_app():
        admin = await admin_client(app)
        await ok(await admin.put("/v1/buckets/big", json={}), 201)
        data = os.urandom(2 * 1024 * 1024 + 1)  # over the 1 MiB JSON body limit
        assert (await put_object(admin, obj("big", "k"), data))[0] == 201
        assert await (await admin.get(obj("big", "k"))).get_data() == data
        status, body, _ = await put_object(admin, obj("big", "k2"), os.urandom(3 * 1024 * 1024 + 1))
        assert status == 413, body
        assert len(list(app.extensions["skerry.objects"].backend.blob_ids())) == 1


async def test_project_scoping_and_roles(users: dict[str, TokenClient]) -> None:
    alice, bob, carol, admin = users["alice"], users["bob"], users["carol"], users["admin"]
    await make_bucket(alice)
    assert (await put_object(alice, obj("photos", "k"), b"mine"))[0] == 201
    # carol (another project) sees nothing, and cannot tell the bucket exists.
    assert (await ok(await carol.get("/v1/buckets")))["buckets"] == []
    for resp in (
        await carol.get("/v1/buckets/photos"),
        await carol.get(obj("photos", "k")),
        await carol.delete(obj("photos", "k")),
        await carol.delete("/v1/buckets/photos"),
    ):
        assert resp.status_code == 404
    assert (await put_object(carol, obj("photos", "k"), b"theirs"))[0] == 404
    # bob (reader) reads but cannot write.
    assert await (await bob.get(obj("photos", "k"))).get_data() == b"mine"
    assert (await put_object(bob, obj("photos", "k2"), b"x"))[0] == 403
    await ok(await bob.delete(obj("photos", "k")), 403)
    await ok(await bob.put("/v1/buckets/other", json={}), 403)
    # the cloud admin sees all.
    listed = await ok(await admin.get("/v1/buckets"))
    assert [b["name"] for b in listed["buckets"]] == ["photos"]
    assert await (await admin.get(obj("photos", "k"))).get_data() == b"mine"
    # no token: 401.
    anon = client_with(alice.app, None)
    await ok(await anon.get("/v1/buckets"), 401)


async def test_corrupt_object_is_503_and_listed(app: Quart, users: dict[str, TokenClient]) -> None:
    alice = users["alice"]
    await make_bucket(alice)
    await put_object(alice, obj("photos", "k"), b"hello, objects")
    objects = app.extensions["skerry.objects"]
    blob = objects.index.version("photos", "k")["blob_id"]
    path = objects.backend.path(blob)
    path.write_bytes(b"HELLO, objects")
    got = await ok(await alice.get(obj("photos", "k")), 503)
    assert "corrupt" in got["error"]["message"]
    assert [v.key for v in objects.corrupt()] == ["k"]


async def test_mutations_are_audited(users: dict[str, TokenClient]) -> None:
    alice, admin = users["alice"], users["admin"]
    await make_bucket(alice)
    await put_object(alice, obj("photos", "a/b"), b"x")
    await alice.delete(obj("photos", "a/b"))
    await users["bob"].delete(obj("photos", "a/b"))
    events = (await ok(await admin.get("/v1/audit?limit=50")))["events"]
    got = [(e["action"], e["target"], e["result"]) for e in events if "buckets" in e["action"]]
    assert ("PUT /v1/buckets/{bucket}", "bucket=photos", "201") in got
    assert ("PUT /v1/buckets/{bucket}/objects/{key}", "bucket=photos,key=a/b", "201") in got
    assert ("DELETE /v1/buckets/{bucket}/objects/{key}", "bucket=photos,key=a/b", "204") in got
    assert ("DELETE /v1/buckets/{bucket}/objects/{key}", "bucket=photos,key=a/b", "403") in got
    assert json.dumps(events).count(alice.token or "-") == 0

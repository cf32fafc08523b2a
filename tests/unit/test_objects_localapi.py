# ruff: noqa: F811  (the store and ceph_conf fixtures are imported from objects_support)
"""The object API in a site's local API: document buckets, offline tokens, both backends."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import CentralConfig
from edged.config import EdgeConfig
from edged.daemon import EdgeDaemon
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.libvirt_testnode import write_test_node
from edged.identity import IdentityCache
from edged.localapi import LocalSite, create_local_app
from edged.objects.bucket_sync import plan, sync_buckets
from edged.objects.store import Bucket, ObjectStore
from edged.overrides import OverrideStore
from edged.state import LocalState
from edged.tokens import issue, public_key_text
from tests.unit.objects_http_support import obj, put_object
from tests.unit.objects_support import ceph_conf, store  # noqa: F401

SITE = "site-a"
KEY = Ed25519PrivateKey.generate()
USERS = {"alice": ("p1", "member"), "bob": ("p1", "reader"), "carol": ("p2", "member")}
USERS["root"] = ("p-admin", "admin")


def identity() -> dict[str, Any]:
    return {
        "issuer": "skerry",
        "admin_project": "p-admin",
        "keys": {"k1": public_key_text(KEY)},
        "projects": {p: {"name": p, "enabled": True} for p in ("p1", "p2", "p-admin")},
        "users": {u: {"name": u, "enabled": True} for u in USERS},
        "assignments": {u: {p: [r]} for u, (p, r) in USERS.items()},
        "revoked_tokens": {},
        "revoked_before": {},
    }


def bucket_entry(name: str, project: str = "p1", **kw: Any) -> dict[str, Any]:
    return {"name": name, "project_id": project, "replicate_to_central": True, "peers": [], **kw}


def document(*buckets: dict[str, Any]) -> dict[str, Any]:
    return {"site": SITE, "settings": {}, "servers": [], "buckets": list(buckets),
            "identity": identity()}  # fmt: skip


def auth(user: str) -> dict[str, str]:
    project, role = USERS[user]
    token, _ = issue(
        KEY, "k1", issuer="skerry", user_id=user, user_name=user, project_id=project,
        roles=(role,), ttl_s=600,
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


class Client:
    """Quart's test client with a user's token on every request."""

    def __init__(self, client: Any, user: str) -> None:
        self.client, self.headers = client, auth(user)

    def request(self, path: str, method: str, headers: dict[str, str]) -> Any:
        return self.client.request(path, method=method, headers={**self.headers, **headers})

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await getattr(self.client, method)(path, headers=headers, **kw)


@pytest.fixture
async def site(tmp_path: Path, store: ObjectStore) -> AsyncIterator[tuple[LocalSite, Any]]:
    state = LocalState(tmp_path / "state")
    state.accept(1, document(bucket_entry("photos"), bucket_entry("other", "p2")))
    ident = IdentityCache()
    ident.load(1, state.document())
    sync_buckets(store, state.document()["buckets"])
    driver = LibvirtCompute(SITE, write_test_node(tmp_path), tmp_path / "state", tmp_path)
    local = LocalSite(
        site=SITE, state=state, identity=ident, overrides=OverrideStore(state), driver=driver,
        driver_lock=asyncio.Lock(), audit_path=tmp_path / "state" / "local-audit.jsonl",
        objects=store,
    )  # fmt: skip
    app = create_local_app(local)
    async with app.test_app() as test_app:
        yield local, test_app.test_client()
    state.close()
    driver.close()


async def test_objects_at_a_site_with_central_gone(site: tuple[LocalSite, Any]) -> None:
    local, client = site
    alice = Client(client, "alice")
    data = os.urandom(300 * 1024)  # well past the local API's 64 KiB body limit
    status, body, _ = await put_object(alice, obj("photos", "cam/1.jpg"), data,
                                       {"X-Object-Meta-Cam": "north"})  # fmt: skip
    assert status == 201, body
    resp = await alice.call("get", obj("photos", "cam/1.jpg"))
    assert resp.status_code == 200 and await resp.get_data() == data
    assert resp.headers["X-Object-Meta-Cam"] == "north"
    resp = await alice.call("get", obj("photos", "cam/1.jpg"), headers={"Range": "bytes=5-9"})
    assert resp.status_code == 206 and await resp.get_data() == data[5:10]
    listed = await (await alice.call("get", "/v1/buckets/photos")).get_json()
    assert [o["key"] for o in listed["objects"]] == ["cam/1.jpg"]
    assert listed["bucket"]["policy"] == {"replicate_to_central": True, "peers": []}
    # The site's HLC stamps carry its name.
    assert listed["objects"][0]["hlc"].endswith("-site-a")
    assert (await alice.call("delete", obj("photos", "cam/1.jpg"))).status_code == 204
    assert (await alice.call("get", obj("photos", "cam/1.jpg"))).status_code == 404
    assert [v.deleted for v in local.objects.changes_since("photos", 0, 10)] == [True]


async def test_site_cannot_make_or_drop_buckets(site: tuple[LocalSite, Any]) -> None:
    _, client = site
    for method in ("put", "delete"):
        resp = await Client(client, "root").call(method, "/v1/buckets/photos")
        body = await resp.get_json()
        assert (
            resp.status_code == 405 and "created and deleted at central" in body["error"]["message"]
        )


async def test_scoping_roles_and_tokens(site: tuple[LocalSite, Any], tmp_path: Path) -> None:
    _, client = site
    alice, bob, carol = Client(client, "alice"), Client(client, "bob"), Client(client, "carol")
    await put_object(alice, obj("photos", "k"), b"data")
    names = lambda body: [b["name"] for b in body["buckets"]]  # noqa: E731
    assert names(await (await alice.call("get", "/v1/buckets")).get_json()) == ["photos"]
    assert names(await (await Client(client, "root").call("get", "/v1/buckets")).get_json()) == [
        "other",
        "photos",
    ]
    assert (await carol.call("get", obj("photos", "k"))).status_code == 404
    assert (await put_object(carol, obj("photos", "k"), b"x"))[0] == 404
    assert await (await bob.call("get", obj("photos", "k"))).get_data() == b"data"
    assert (await put_object(bob, obj("photos", "k"), b"x"))[0] == 403
    assert (await bob.call("delete", obj("photos", "k"))).status_code == 403
    resp = await client.get("/v1/buckets")
    assert resp.status_code == 401 and (await resp.get_json())["error"]["code"] == "unauthorized"
    lines = (tmp_path / "state" / "local-audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    got = [(e["user"], e["action"], e["key"], e["result"]) for e in events]
    assert got == [
        ("alice", "PUT /v1/buckets/{bucket}/objects/{key}", "k", 201),
        ("carol", "PUT /v1/buckets/{bucket}/objects/{key}", "k", 404),
        ("bob", "PUT /v1/buckets/{bucket}/objects/{key}", "k", 403),
        ("bob", "DELETE /v1/buckets/{bucket}/objects/{key}", "k", 403),
    ]
    assert "Bearer" not in "".join(lines)


async def test_bucket_leaving_the_document(site: tuple[LocalSite, Any]) -> None:
    local, client = site
    alice = Client(client, "alice")
    await put_object(alice, obj("photos", "k"), b"keep me")
    done = sync_buckets(local.objects, [])  # both buckets gone from the document
    assert (done.orphan, done.remove) == (["photos"], ["other"])
    assert [b.name for b in local.objects.buckets()] == ["photos"]
    assert await (await alice.call("get", obj("photos", "k"))).get_data() == b"keep me"
    status, body, _ = await put_object(alice, obj("photos", "k2"), b"new")
    assert status == 409 and "no longer in this site's desired state" in body["error"]["message"]
    assert (await alice.call("delete", obj("photos", "k"))).status_code == 204
    sync_buckets(local.objects, [])
    assert local.objects.buckets() == []


def test_plan_skips_malformed_entries() -> None:
    held = [Bucket("photos", "p1", 0.0, {"replicate_to_central": True, "peers": []})]
    todo = plan(
        [{"name": "photos", "project_id": 5}, "junk", bucket_entry("new", peers=["site-b"])],
        held,
        {"photos": 3},
    )
    assert list(todo.ensure) == ["new"]
    assert todo.remove == todo.orphan == []  # a malformed entry keeps its bucket as held
    assert len(todo.invalid) == 2
    assert plan("not a list", held, {"photos": 0}).remove == ["photos"]


def _http(method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_daemon_holds_document_buckets_and_serves_objects(tmp_path: Path) -> None:
    """EdgeDaemon: buckets from the held document each pass, objects over real HTTP."""
    state = LocalState(tmp_path / "state")
    state.accept(1, document(bucket_entry("photos")))
    state.close()
    port = _free_port()
    driver = LibvirtCompute(SITE, write_test_node(tmp_path), tmp_path / "state", tmp_path)
    config = EdgeConfig(
        site=SITE,
        state_dir=tmp_path / "state",
        libvirt_uri=driver.uri,
        image_dir=tmp_path,
        local_api_port=port,
        object_max_bytes=1024 * 1024,
    )
    daemon = EdgeDaemon(config, driver)
    try:
        await asyncio.to_thread(daemon._pass)
        assert [b.name for b in daemon.objects.buckets()] == ["photos"]
        stop = asyncio.Event()
        serving = asyncio.create_task(daemon.serve_local_api(stop))
        for _ in range(100):  # the port is bound once serve_local_api runs
            try:
                await asyncio.to_thread(_http, "GET", f"http://127.0.0.1:{port}/healthz", {})
                break
            except OSError:
                await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/buckets/photos/objects/a/b"
        data = os.urandom(200 * 1024)
        status, headers, _ = await asyncio.to_thread(_http, "PUT", url, auth("alice"), data)
        assert status == 201
        status, headers, body = await asyncio.to_thread(_http, "HEAD", url, auth("alice"))
        assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
        status, _, body = await asyncio.to_thread(_http, "GET", url, auth("alice"))
        assert (status, body) == (200, data)
        big = os.urandom(1024 * 1024 + 1)
        status, _, body = await asyncio.to_thread(_http, "PUT", url + "2", auth("alice"), big)
        assert status == 413 and b"at most 1048576 bytes" in body
        assert (config.state_dir / "objects" / "index.db").is_file()
        stop.set()
        await asyncio.wait_for(serving, 5)
    finally:
        daemon.ctx.term()
        daemon.state.close()
        daemon.objects.close()
        driver.close()


def test_object_config_keys_are_checked(tmp_path: Path) -> None:
    base = {"site": SITE}
    assert EdgeConfig(**base).validate() is None
    assert "object_backend" in (EdgeConfig(**base, object_backend="s3").validate() or "")
    assert "rados_conf" in (EdgeConfig(**base, object_backend="rados").validate() or "")
    conf = tmp_path / "ceph.conf"
    bad_pool = EdgeConfig(**base, object_backend="rados", rados_conf=conf)
    assert "rados_pool" in (bad_pool.validate() or "")
    ok = EdgeConfig(**base, object_backend="rados", rados_conf=conf, rados_pool="site-a")
    assert ok.validate() is None
    assert "object_max_bytes" in (EdgeConfig(**base, object_max_bytes=0).validate() or "")
    assert "object_backend" in (CentralConfig(object_backend="nfs").validate() or "")


async def test_unreachable_rados_is_503_naming_it(tmp_path: Path) -> None:
    from edged.objects.stores import open_store

    objects = open_store(
        SITE, tmp_path / "obj", "rados", rados_conf=tmp_path / "gone.conf", rados_pool="p"
    )
    sync_buckets(objects, [bucket_entry("photos")])
    state = LocalState(tmp_path / "state")
    state.accept(1, document(bucket_entry("photos")))
    ident = IdentityCache()
    ident.load(1, state.document())
    driver = LibvirtCompute(SITE, write_test_node(tmp_path), tmp_path / "state", tmp_path)
    local = LocalSite(
        site=SITE, state=state, identity=ident, overrides=OverrideStore(state), driver=driver,
        driver_lock=asyncio.Lock(), audit_path=tmp_path / "audit.jsonl", objects=objects,
    )  # fmt: skip
    try:
        async with create_local_app(local).test_app() as test_app:
            alice = Client(test_app.test_client(), "alice")
            assert (await alice.call("get", "/v1/buckets/photos")).status_code == 200
            status, body, _ = await put_object(alice, obj("photos", "k"), b"x")
            assert status == 503 and body["error"]["code"] == "unavailable"
            message = body["error"]["message"]
            # Either way the operator is told which of the two is missing.
            assert (
                "cannot reach Ceph cluster with conf" in message and "gone.conf" in message
            ) or ("python-rados is not importable" in message)
    finally:
        state.close()
        driver.close()
        objects.close()

"""The site's local API (edged.localapi) through Quart's test client.

A real LocalState in tmp_path, the real LibvirtCompute on libvirt's test driver,
and an identity section signed with a key made here. Reconcile passes are run
the way the daemon runs them (:func:`run_pass`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.config import EdgeConfig
from edged.daemon import EdgeDaemon
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.libvirt_testnode import write_test_node
from edged.executor import Executor
from edged.identity import IdentityCache
from edged.localapi import LocalSite, create_local_app
from edged.overrides import OverrideStore
from edged.reconcile import PowerOverride
from edged.state import LocalState
from edged.tokens import b64url, issue, public_key_text

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")

SITE = "site-a"
KEY = Ed25519PrivateKey.generate()
USERS = {
    "alice": {"p1": ["member"]},
    "bob": {"p1": ["reader"]},
    "carol": {"p2": ["member"]},
    "root": {"p-admin": ["admin"]},
    "gone": {"p1": ["member"]},
}


def identity(**changes: Any) -> dict[str, Any]:
    section = {
        "issuer": "skerry",
        "admin_project": "p-admin",
        "keys": {"k1": public_key_text(KEY)},
        "projects": {p: {"name": p, "enabled": True} for p in ("p1", "p2", "p-admin")},
        "users": {u: {"name": u.title(), "enabled": u != "gone"} for u in USERS},
        "assignments": USERS,
        "revoked_tokens": {},
        "revoked_before": {},
    }
    section.update(changes)
    return section


def server(server_id: str, project: str, power: str = "running") -> dict[str, Any]:
    return {
        "id": server_id,
        "name": f"vm-{server_id}",
        "project_id": project,
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image": "tiny",
        "power": power,
    }


def document(*servers: dict[str, Any], **identity_changes: Any) -> dict[str, Any]:
    return {
        "site": SITE,
        "settings": {},
        "servers": list(servers) or [server("a", "p1"), server("b", "p1"), server("c", "p2")],
        "identity": identity(**identity_changes),
    }


def token(user: str, project: str | None = None, roles: tuple[str, ...] | None = None, **kw: Any):
    project = project or next(iter(USERS[user]))
    roles = roles or tuple(USERS[user][project])
    return issue(
        kw.pop("key", KEY),
        kw.pop("kid", "k1"),
        issuer="skerry",
        user_id=user,
        user_name=user.title(),
        project_id=project,
        roles=roles,
        ttl_s=kw.pop("ttl_s", 600),
        **kw,
    )


def auth(user: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **kw)[0]}"}


class Site:
    """The daemon's parts the local API and the reconcile pass share."""

    def __init__(self, tmp_path: Path) -> None:
        images = tmp_path / "images" / "tiny"
        images.mkdir(parents=True)
        (images / "vmlinuz").write_bytes(b"k")
        (images / "initrd.gz").write_bytes(b"i")
        self.state_dir = tmp_path / "state"
        self.driver = LibvirtCompute(
            SITE, write_test_node(tmp_path), self.state_dir, tmp_path / "images", stop_grace_s=0.2
        )
        self.executor = Executor(self.driver)
        self.identity = IdentityCache()
        self.woken = 0
        self.open()

    def open(self) -> None:
        self.state = LocalState(self.state_dir)
        self.overrides = OverrideStore(self.state)
        if self.state.generation:
            self.identity.load(self.state.generation, self.state.document())
        self.local = LocalSite(
            site=SITE,
            state=self.state,
            identity=self.identity,
            overrides=self.overrides,
            driver=self.driver,
            driver_lock=asyncio.Lock(),
            audit_path=self.state_dir / "local-audit.jsonl",
            wake=self.wakeup,
            central_reachable=lambda: False,
        )

    def wakeup(self) -> None:
        self.woken += 1

    def accept(self, generation: int, doc: dict[str, Any]) -> None:
        assert self.state.accept(generation, doc)
        self.identity.load(generation, doc)

    def run_pass(self) -> dict[str, str]:
        """As EdgeDaemon._pass does it; the observed state by server id."""
        result = self.executor.run_pass(
            self.state.generation, self.state.document(), self.overrides.all()
        )
        self.overrides.drop(result.stale_overrides)
        self.state.record_observation(self.state.generation, result.report)
        return {sid: e["state"] for sid, e in result.report["servers"].items()}

    def audit(self) -> list[dict[str, Any]]:
        path = self.state_dir / "local-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def site(tmp_path: Path):
    s = Site(tmp_path)
    s.accept(1, document())
    assert s.run_pass() == {"a": "running", "b": "running", "c": "running"}
    yield s
    s.state.close()
    s.driver.close()


@pytest.fixture
async def client(site: Site) -> AsyncIterator[Any]:
    app = create_local_app(site.local)
    async with app.test_app() as test_app:
        yield test_app.test_client()


async def ids(client: Any, headers: dict[str, str]) -> list[str]:
    resp = await client.get("/v1/servers", headers=headers)
    assert resp.status_code == 200, await resp.get_data()
    return sorted(s["id"] for s in (await resp.get_json())["servers"])


# -- reading ----------------------------------------------------------------------------


async def test_healthz_needs_no_token(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    body = await resp.get_json()
    assert body["site"] == SITE
    assert body["held_generation"] == 1
    assert body["central_reachable"] is False


async def test_list_is_scoped_by_project(client: Any) -> None:
    assert await ids(client, auth("alice")) == ["a", "b"]
    assert await ids(client, auth("bob")) == ["a", "b"]
    assert await ids(client, auth("carol")) == ["c"]
    assert await ids(client, auth("root")) == ["a", "b", "c"]


async def test_list_shows_observed_state(client: Any) -> None:
    resp = await client.get("/v1/servers", headers=auth("alice"))
    a = next(s for s in (await resp.get_json())["servers"] if s["id"] == "a")
    assert a["state"] == "running"
    assert a["power"] == a["document_power"] == "running"
    assert a["override"] is None
    assert a["project_id"] == "p1"
    assert a["flavor"] == {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}
    assert a["observed_generation"] == 1


async def test_other_projects_server_is_404(client: Any) -> None:
    resp = await client.get("/v1/servers/c", headers=auth("alice"))
    assert resp.status_code == 404
    hidden = await resp.get_json()
    resp = await client.get("/v1/servers/nosuch", headers=auth("alice"))
    assert resp.status_code == 404
    missing = await resp.get_json()
    assert hidden["error"]["code"] == missing["error"]["code"] == "not_found"
    assert set(hidden["error"]) == {"code", "message", "details"}
    resp = await client.post("/v1/servers/c/stop", headers=auth("alice"))
    assert resp.status_code == 404
    # the admin sees it
    resp = await client.get("/v1/servers/c", headers=auth("root"))
    assert resp.status_code == 200
    assert (await resp.get_json())["server"]["id"] == "c"


async def test_x_auth_token_header(client: Any) -> None:
    headers = {"X-Auth-Token": token("carol")[0]}
    assert await ids(client, headers) == ["c"]


# -- acting -----------------------------------------------------------------------------


async def test_reader_cannot_act(client: Any, site: Site) -> None:
    for action in ("start", "stop", "reboot"):
        resp = await client.post(f"/v1/servers/a/{action}", headers=auth("bob"))
        assert resp.status_code == 403
        assert (await resp.get_json())["error"]["code"] == "forbidden"
    assert site.overrides.all() == []
    assert [e["result"] for e in site.audit()] == ["forbidden"] * 3
    assert site.run_pass()["a"] == "running"


async def test_stop_and_start(client: Any, site: Site) -> None:
    resp = await client.post("/v1/servers/a/stop", headers=auth("alice"))
    assert resp.status_code == 202
    body = (await resp.get_json())["server"]
    assert body["power"] == "stopped" and body["document_power"] == "running"
    assert body["override"]["made_by"] == "alice"
    assert site.woken == 1
    [override] = site.overrides.all()
    assert (override.server_id, override.power, override.generation, override.against) == (
        "a",
        "stopped",
        1,
        "running",
    )
    assert site.run_pass() == {"a": "shutoff", "b": "running", "c": "running"}
    resp = await client.get("/v1/servers/a", headers=auth("alice"))
    view = (await resp.get_json())["server"]
    assert (view["state"], view["power"]) == ("shutoff", "stopped")
    # Another pass does not undo it: the override is an input of every plan.
    assert site.run_pass()["a"] == "shutoff"

    resp = await client.post("/v1/servers/a/start", headers=auth("alice"))
    assert resp.status_code == 202
    assert site.overrides.all() == []  # back to what the document says
    assert site.run_pass()["a"] == "running"

    audit = site.audit()
    assert [(e["action"], e["target"], e["result"]) for e in audit] == [
        ("stop", "a", "accepted"),
        ("start", "a", "accepted"),
    ]
    for entry in audit:
        assert {"time", "user", "project", "action", "target", "result"} <= set(entry)
        assert (entry["user"], entry["project"]) == ("alice", "p1")


async def test_admin_may_act_on_any_project(client: Any, site: Site) -> None:
    resp = await client.post("/v1/servers/c/stop", headers=auth("root"))
    assert resp.status_code == 202
    assert site.run_pass()["c"] == "shutoff"
    assert site.audit()[0]["project"] == "p-admin"


async def test_reboot(client: Any, site: Site) -> None:
    resp = await client.post("/v1/servers/a/reboot", headers=auth("alice"))
    assert resp.status_code == 200, await resp.get_data()
    assert site.driver.list_owned()["a"].state == "running"
    assert site.audit()[-1]["result"] == "ok"
    # not while it is meant to be off
    await client.post("/v1/servers/b/stop", headers=auth("alice"))
    site.run_pass()
    resp = await client.post("/v1/servers/b/reboot", headers=auth("alice"))
    assert resp.status_code == 409
    assert site.audit()[-1]["result"] == "conflict"


async def test_unknown_action_404(client: Any) -> None:
    resp = await client.post("/v1/servers/a/explode", headers=auth("alice"))
    assert resp.status_code == 404
    resp = await client.delete("/v1/servers/a", headers=auth("alice"))
    assert resp.status_code == 405
    assert "error" in await resp.get_json()


# -- refused tokens ---------------------------------------------------------------------


def forged(alg: str) -> str:
    _, claims = token("alice")
    head = b64url(json.dumps({"alg": alg, "kid": "k1"}).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(b'sig')}"


def bad_tokens() -> dict[str, dict[str, str]]:
    now_expired = token("alice", ttl_s=-1)[0]
    return {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic YWxpY2U6cHc="},
        "garbage": {"Authorization": "Bearer garbage"},
        "three garbage parts": {"X-Auth-Token": "a.b.c"},
        "truncated": {"Authorization": "Bearer " + token("alice")[0][:-20]},
        "expired": {"Authorization": f"Bearer {now_expired}"},
        "other key": auth("alice", key=Ed25519PrivateKey.generate()),
        "unknown kid": auth("alice", kid="k7"),
        "alg none": {"Authorization": f"Bearer {forged('none')}"},
        "hs256": {"Authorization": f"Bearer {forged('HS256')}"},
        "disabled user": auth("gone"),
        "no role in project": auth("carol", project="p1", roles=("member",)),
        "unknown project": auth("alice", project="p9", roles=("member",)),
        "huge": {"Authorization": "Bearer " + "x" * 6000},
    }


@pytest.mark.parametrize("case", sorted(bad_tokens()))
async def test_bad_tokens_are_401_json(client: Any, site: Site, case: str) -> None:
    headers = bad_tokens()[case]
    for method, path in (
        ("GET", "/v1/servers"),
        ("GET", "/v1/servers/a"),
        ("POST", "/v1/servers/a/stop"),
        ("POST", "/v1/servers/a/reboot"),
    ):
        resp = await client.open(path, method=method, headers=headers)
        assert resp.status_code == 401, (case, path, await resp.get_data())
        body = await resp.get_json()
        assert body["error"]["code"] == "unauthorized"
        assert body["error"]["details"] == {}
        assert body["error"]["message"]
        secret = [v.split(" ")[-1] for v in headers.values() if len(v.split(" ")[-1]) > 8]
        assert not any(s in json.dumps(body) for s in secret)
    assert site.overrides.all() == []
    assert site.audit() == []


async def test_revoked_token_is_401(client: Any, site: Site) -> None:
    tok, claims = token("alice")
    headers = {"Authorization": f"Bearer {tok}"}
    assert (await client.get("/v1/servers", headers=headers)).status_code == 200
    site.accept(2, document(revoked_tokens={claims["jti"]: claims["exp"]}))
    resp = await client.get("/v1/servers", headers=headers)
    assert resp.status_code == 401
    assert (await resp.get_json())["error"]["message"] == "token has been revoked"


async def test_audit_never_holds_the_token(client: Any, site: Site) -> None:
    tok = token("alice")[0]
    await client.post("/v1/servers/a/stop", headers={"Authorization": f"Bearer {tok}"})
    text = (site.state_dir / "local-audit.jsonl").read_text()
    assert text.count("\n") == 1
    for part in tok.split("."):
        assert part not in text


# -- overrides and central --------------------------------------------------------------


async def test_override_survives_reopen_and_ends_when_central_decides(
    client: Any, site: Site
) -> None:
    resp = await client.post("/v1/servers/a/stop", headers=auth("alice"))
    assert resp.status_code == 202
    assert site.run_pass()["a"] == "shutoff"

    # edged restarts: the override is on disk.
    site.state.close()
    site.open()
    assert [o.server_id for o in site.overrides.all()] == ["a"]
    assert site.run_pass()["a"] == "shutoff"

    # A new generation that keeps a's power as it was: the override holds.
    site.accept(2, document(server("a", "p1"), server("b", "p1", "stopped"), server("c", "p2")))
    assert site.run_pass() == {"a": "shutoff", "b": "shutoff", "c": "running"}
    assert [o.server_id for o in site.overrides.all()] == ["a"]

    # central asks for another power than the override was made against: central wins.
    site.accept(3, document(server("a", "p1", "stopped"), server("b", "p1"), server("c", "p2")))
    site.run_pass()
    assert site.overrides.all() == []
    site.accept(4, document(server("a", "p1"), server("b", "p1"), server("c", "p2")))
    assert site.run_pass()["a"] == "running"


async def test_override_dropped_when_server_leaves(client: Any, site: Site) -> None:
    await client.post("/v1/servers/a/stop", headers=auth("alice"))
    site.accept(2, document(server("b", "p1"), server("c", "p2")))
    assert site.run_pass() == {"b": "running", "c": "running"}
    assert site.overrides.all() == []


async def test_local_start_of_a_server_central_stopped(client: Any, site: Site) -> None:
    site.accept(2, document(server("a", "p1", "stopped"), server("b", "p1"), server("c", "p2")))
    assert site.run_pass()["a"] == "shutoff"
    resp = await client.post("/v1/servers/a/start", headers=auth("alice"))
    assert resp.status_code == 202
    assert site.overrides.all() == [
        PowerOverride("a", "running", 2, "stopped", site.overrides.all()[0].made_at, "alice")
    ]
    assert site.run_pass()["a"] == "running"


# -- wired into the daemon --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_daemon_serves_the_local_api(tmp_path: Path) -> None:
    """EdgeDaemon: snapshot from the held document at start, overrides in passes and health,
    the local API served by hypercorn in the daemon's loop."""
    parts = Site(tmp_path)
    parts.accept(1, document())
    parts.state.close()
    port = free_port()
    config = EdgeConfig(
        site=SITE,
        state_dir=parts.state_dir,
        libvirt_uri=parts.driver.uri,
        image_dir=tmp_path / "images",
        local_api_port=port,
    )
    daemon = EdgeDaemon(config, parts.driver)
    try:
        assert daemon.identity.generation == 1  # before central said a word
        stop = asyncio.Event()
        serving = asyncio.create_task(daemon.serve_local_api(stop))
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                status, body = await asyncio.to_thread(http_get, f"{url}/healthz", {})
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert (status, body["site"], body["held_generation"]) == (200, SITE, 1)

        status, body = await asyncio.to_thread(http_get, f"{url}/v1/servers", auth("carol"))
        assert status == 200 and [s["id"] for s in body["servers"]] == ["c"]
        status, body = await asyncio.to_thread(http_get, f"{url}/v1/servers", {})
        assert status == 401 and body["error"]["code"] == "unauthorized"

        # A second daemon cannot bind the port: logged, not fatal.
        await daemon.serve_local_api(asyncio.Event())

        daemon.overrides.set(PowerOverride("a", "stopped", 1, "running", 1.0, "alice"))
        await asyncio.to_thread(daemon._pass)
        assert daemon.driver.list_owned()["a"].state == "shutoff"
        assert daemon.health()["local_overrides"]["a"]["power"] == "stopped"
        assert daemon.health()["identity"]["generation"] == 1
        stop.set()
        await asyncio.wait_for(serving, 5)
    finally:
        daemon.ctx.term()
        daemon.state.close()
        daemon.driver.close()

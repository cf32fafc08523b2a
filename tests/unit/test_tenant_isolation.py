"""Tenant isolation over every API route (/v1, /vnfpkgm/v1, /vnflcm/v1), from the URL map.

Two projects, each with a member and a reader, plus the cloud admin. Project
B's member acting on project A's resources gets 404 (project resources: their
existence does not leak) or 403 (admin-only routes) and changes nothing;
A's reader cannot change anything (403); without a token everything but
``POST /v1/auth/tokens`` is 401. A route added later is covered automatically:
it is held to "403 or 404, nothing changed" unless listed below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from tests.unit.identity_support import (
    FLAVOR,
    PASSWORD,
    admin_client,
    client_with,
    dump,
    login,
    make_app,
    make_project,
    make_user,
    ok,
)

PUBLIC = {("POST", "/v1/auth/tokens")}
# Reads every authenticated caller may make (shared, not project resources);
# their answers must still not mention project A's resources.
OPEN_READS = {
    ("GET", "/v1/sites"),
    ("GET", "/v1/sites/<name>"),
    ("GET", "/v1/settings"),
    ("GET", "/v1/servers"),
    ("GET", "/v1/networks"),
    ("GET", "/v1/ports"),
    ("GET", "/v1/projects"),
    ("GET", "/v1/auth/token"),
    ("GET", "/v1/images"),
    ("GET", "/v1/image-signing-keys"),
    ("GET", "/v1/volumes"),
    ("GET", "/v1/buckets"),
    ("GET", "/vnflcm/v1/vnf_instances"),
    ("GET", "/vnflcm/v1/vnf_lcm_op_occs"),
    ("GET", "/vnfpkgm/v1/vnf_packages"),
}
# Creating in the caller's own project is allowed; not an action on A's resources.
OWN_PROJECT_CREATES = {
    ("POST", "/v1/servers"),
    ("POST", "/v1/networks"),
    ("POST", "/v1/images"),
    ("POST", "/v1/volumes"),
    # Bucket names are global (S3-like): a taken name is 409 whoever holds it.
    ("PUT", "/v1/buckets/<string:bucket>"),
    ("POST", "/vnflcm/v1/vnf_instances"),
    ("POST", "/vnfpkgm/v1/vnf_packages"),
}
# Exact answers to B's member acting on A's resources (others: 403 or 404).
CROSS_PROJECT = {
    ("GET", "/v1/servers/<server_id>"): 404,
    ("POST", "/v1/servers/<server_id>/start"): 404,
    ("POST", "/v1/servers/<server_id>/stop"): 404,
    ("DELETE", "/v1/servers/<server_id>"): 404,
    ("GET", "/v1/networks/<network_id>"): 404,
    ("DELETE", "/v1/networks/<network_id>"): 404,
    ("GET", "/v1/networks/<network_id>/subnets"): 404,
    ("POST", "/v1/networks/<network_id>/subnets"): 404,
    ("DELETE", "/v1/networks/<network_id>/subnets/<subnet_id>"): 404,
    ("POST", "/v1/ports"): 404,  # on project A's network
    ("GET", "/v1/ports/<port_id>"): 404,
    ("DELETE", "/v1/ports/<port_id>"): 404,
    ("POST", "/v1/ports/<port_id>/attach"): 404,
    ("POST", "/v1/ports/<port_id>/detach"): 404,
    ("GET", "/v1/projects/<project_id>"): 404,
    ("GET", "/v1/projects/<project_id>/roles"): 404,
    ("GET", "/v1/users/<user_id>"): 404,
    ("POST", "/v1/users/<user_id>/revoke-tokens"): 404,
    ("GET", "/v1/users/<user_id>/application_credentials"): 404,
    ("POST", "/v1/users/<user_id>/application_credentials"): 404,
    ("GET", "/v1/users/<user_id>/application_credentials/<cred_id>"): 404,
    ("DELETE", "/v1/users/<user_id>/application_credentials/<cred_id>"): 404,
    ("POST", "/v1/sites"): 403,
    ("PUT", "/v1/settings"): 403,
    ("GET", "/v1/hub"): 403,
    ("POST", "/v1/projects"): 403,
    ("PATCH", "/v1/projects/<project_id>"): 403,
    ("PUT", "/v1/projects/<project_id>/users/<user_id>/roles/<role>"): 403,
    ("DELETE", "/v1/projects/<project_id>/users/<user_id>/roles/<role>"): 403,
    ("GET", "/v1/users"): 403,
    ("POST", "/v1/users"): 403,
    ("PATCH", "/v1/users/<user_id>"): 403,
    ("DELETE", "/v1/auth/tokens/<token_id>"): 403,
    ("GET", "/v1/auth/keys"): 403,
    ("POST", "/v1/auth/keys/rotate"): 403,
    ("POST", "/v1/auth/keys/<kid>/retire"): 403,
    ("GET", "/v1/audit"): 403,
    ("GET", "/v1/images/<image_id>"): 404,
    ("DELETE", "/v1/images/<image_id>"): 404,
    ("PUT", "/v1/images/<image_id>/file"): 404,
    ("GET", "/v1/images/<image_id>/file"): 404,
    ("POST", "/v1/image-signing-keys"): 403,
    ("DELETE", "/v1/image-signing-keys/<key_id>"): 403,
    ("GET", "/v1/volumes/<volume_id>"): 404,
    ("DELETE", "/v1/volumes/<volume_id>"): 404,
    ("POST", "/v1/volumes/<volume_id>/extend"): 404,
    ("POST", "/v1/volumes/<volume_id>/attach"): 404,
    ("POST", "/v1/volumes/<volume_id>/detach"): 404,
    ("GET", "/v1/volumes/<volume_id>/snapshots"): 404,
    ("POST", "/v1/volumes/<volume_id>/snapshots"): 404,
    ("GET", "/v1/volumes/<volume_id>/snapshots/<snapshot_id>"): 404,
    ("DELETE", "/v1/volumes/<volume_id>/snapshots/<snapshot_id>"): 404,
    ("GET", "/v1/buckets/<string:bucket>"): 404,
    ("DELETE", "/v1/buckets/<string:bucket>"): 404,
    ("PUT", "/v1/buckets/<string:bucket>/objects/<path:key>"): 404,
    ("GET", "/v1/buckets/<string:bucket>/objects/<path:key>"): 404,
    ("DELETE", "/v1/buckets/<string:bucket>/objects/<path:key>"): 404,
    ("GET", "/vnflcm/v1/vnf_instances/<instance_id>"): 404,
    ("DELETE", "/vnflcm/v1/vnf_instances/<instance_id>"): 404,
    ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/instantiate"): 404,
    ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/terminate"): 404,
    ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/scale"): 404,
    ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/heal"): 404,
    ("GET", "/vnflcm/v1/vnf_lcm_op_occs/<op_id>"): 404,
    ("POST", "/vnflcm/v1/vnf_lcm_op_occs/<op_id>/retry"): 404,
    ("POST", "/vnflcm/v1/vnf_lcm_op_occs/<op_id>/rollback"): 404,
    ("POST", "/vnflcm/v1/vnf_lcm_op_occs/<op_id>/fail"): 404,
    ("GET", "/vnfpkgm/v1/vnf_packages/<package_id>"): 404,
    ("PATCH", "/vnfpkgm/v1/vnf_packages/<package_id>"): 404,
    ("DELETE", "/vnfpkgm/v1/vnf_packages/<package_id>"): 404,
    ("PUT", "/vnfpkgm/v1/vnf_packages/<package_id>/package_content"): 404,
    ("GET", "/vnfpkgm/v1/vnf_packages/<package_id>/vnfd"): 404,
}
# The API's roots (Skerry's own and the ETSI SOL 005 / SOL 003 ones); every route under
# them is enumerated.
API_ROOTS = ("/v1", "/vnfpkgm/v1", "/vnflcm/v1")
VROUTER_ID = "6a7a1f10-0001-4c3e-9d2b-000000000001"  # vnf-templates/vrouter
IMAGE_KEY = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="  # base64 of 32 bytes
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def sample_bodies(world: World) -> dict[tuple[str, str], Any]:
    """Valid bodies, so a refusal is about who calls, not what they sent."""
    try:
        from central import zap

        site_key: str = zap.new_keypair().public
    except ImportError:  # before site enrollment exists
        site_key = ""
    return {
        ("POST", "/v1/sites"): {"name": "edge-z"},
        ("PUT", "/v1/sites/<name>/key"): {"public_key": site_key},
        ("POST", "/v1/servers"): {
            "name": "vm-x",
            "site": "edge-a",
            "flavor": FLAVOR,
            "image": "tiny",
        },
        ("PUT", "/v1/settings"): {"reconcile_interval_s": 30},
        ("POST", "/v1/networks"): {"name": "net-x", "site": "edge-a"},
        ("POST", "/v1/networks/<network_id>/subnets"): {"cidr": "10.9.0.0/24"},
        ("POST", "/v1/ports"): {"network_id": world.params["network_id"]},
        ("POST", "/v1/ports/<port_id>/attach"): {"server_id": world.params["server_id"]},
        ("PUT", "/v1/buckets/<string:bucket>"): {"sites": ["edge-a"]},
        ("POST", "/v1/projects"): {"name": "project-z"},
        ("PATCH", "/v1/projects/<project_id>"): {"enabled": False},
        ("POST", "/v1/users"): {"name": "zed", "password": PASSWORD},
        ("PATCH", "/v1/users/<user_id>"): {"enabled": False, "password": PASSWORD + "x"},
        ("POST", "/v1/users/<user_id>/application_credentials"): {"name": "auto"},
        ("POST", "/v1/images"): {"name": "img-x", "disk_format": "raw"},
        ("POST", "/v1/image-signing-keys"): {"name": "key-x", "public_key": IMAGE_KEY},
        ("POST", "/v1/volumes"): {"name": "vol-x", "site": "edge-a", "size_gb": 1},
        ("POST", "/v1/volumes/<volume_id>/extend"): {"size_gb": 2},
        ("POST", "/v1/volumes/<volume_id>/attach"): {"server_id": world.params["server_id"]},
        ("POST", "/v1/volumes/<volume_id>/snapshots"): {"name": "snap-x"},
        ("POST", "/vnflcm/v1/vnf_instances"): {"vnfdId": VROUTER_ID},
        ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/instantiate"): {
            "flavourId": "default",
            "extVirtualLinks": [
                {
                    "id": "up",
                    "resourceId": world.params["network_id"],
                    "extCps": [{"cpdId": "uplink"}],
                }
            ],
            "additionalParams": {"site": "edge-a"},
        },
        ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/terminate"): {
            "terminationType": "FORCEFUL"
        },
        ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/scale"): {
            "type": "SCALE_OUT",
            "aspectId": "filter_instances",
        },
        ("POST", "/vnflcm/v1/vnf_instances/<instance_id>/heal"): {
            "vnfcInstanceId": [world.params["server_id"]]
        },
        ("POST", "/vnfpkgm/v1/vnf_packages"): {"userDefinedData": {"k": "v"}},
        ("PATCH", "/vnfpkgm/v1/vnf_packages/<package_id>"): {"operationalState": "DISABLED"},
        ("POST", "/v1/auth/tokens"): {
            "password": {"user": "a-member", "password": PASSWORD, "project": "project-a"}
        },
    }


@dataclass
class World:
    app: Quart
    tokens: dict[str, str]  # who -> token
    params: dict[str, str]  # URL parameter -> one of project A's resources
    a_ids: list[str]  # ids that must not show in B's answers


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The VNF lifecycle engine steps only when woken: the store holds still between calls.
    app = make_app(tmp_path, monkeypatch, lcm_poll_s=3600.0)
    async with app.test_app():
        admin = await admin_client(app)
        await ok(await admin.post("/v1/sites", json={"name": "edge-a"}), 201)
        tokens: dict[str, str] = {"admin": admin.token or ""}
        users: dict[str, dict[str, Any]] = {}
        projects = {}
        for p in ("a", "b"):
            projects[p] = await make_project(admin, f"project-{p}")
            for role in ("member", "reader"):
                who = f"{p}-{role}"
                users[who] = await make_user(admin, who, projects[p]["id"], role)
                issued = await login(app, who, PASSWORD, f"project-{p}")
                tokens[who] = issued["token"]
                users[who]["token_id"] = issued["token_id"]
        a_member = client_with(app, tokens["a-member"])
        body = {"name": "vm-a", "site": "edge-a", "flavor": FLAVOR, "image": "tiny"}
        server = await ok(await a_member.post("/v1/servers", json=body), 202)
        cred = await ok(
            await a_member.post(
                f"/v1/users/{users['a-member']['id']}/application_credentials",
                json={"name": "ci"},
            ),
            201,
        )
        keys = await ok(await admin.get("/v1/auth/keys"))
        net = await ok(
            await a_member.post("/v1/networks", json={"name": "net-a", "site": "edge-a"}), 201
        )
        subnet = await ok(
            await a_member.post(f"/v1/networks/{net['id']}/subnets", json={"cidr": "10.0.0.0/24"}),
            201,
        )
        port = await ok(await a_member.post("/v1/ports", json={"network_id": net["id"]}), 201)
        image = await ok(
            await a_member.post("/v1/images", json={"name": "img-a", "disk_format": "raw"}), 201
        )
        image_key = await ok(
            await admin.post(
                "/v1/image-signing-keys", json={"name": "key-a", "public_key": IMAGE_KEY}
            ),
            201,
        )
        volume = await ok(
            await a_member.post(
                "/v1/volumes",
                json={"name": "vol-a", "site": "edge-a", "size_gb": 1, "encrypted": True},
            ),
            202,
        )
        snapshot = await ok(
            await a_member.post(f"/v1/volumes/{volume['id']}/snapshots", json={"name": "s-a"}),
            202,
        )
        bucket = "bucket-a"
        await ok(await a_member.put(f"/v1/buckets/{bucket}", json={"sites": ["edge-a"]}), 201)
        await ok(await a_member.put(f"/v1/buckets/{bucket}/objects/obj-a", data=b"a's"), 201)
        instance = await ok(
            await a_member.post("/vnflcm/v1/vnf_instances", json={"vnfdId": VROUTER_ID}), 201
        )
        link = {"id": "up", "resourceId": net["id"], "extCps": [{"cpdId": "uplink"}]}
        resp = await a_member.post(
            f"/vnflcm/v1/vnf_instances/{instance['id']}/instantiate",
            json={"flavourId": "default", "extVirtualLinks": [link],
                  "additionalParams": {"site": "edge-a"}},
        )  # fmt: skip
        op_id = resp.headers["Location"].rsplit("/", 1)[1]
        for _ in range(3):  # no image tiny-disk: FAILED_TEMP, where it stays
            app.extensions["skerry.lcm"].tick()
        package = await ok(await a_member.post("/vnfpkgm/v1/vnf_packages", json={}), 201)
        params = {
            "instance_id": instance["id"],
            "op_id": op_id,
            "package_id": package["id"],
            "volume_id": volume["id"],
            "snapshot_id": snapshot["id"],
            "bucket": bucket,
            "key": "obj-a",
            "server_id": server["id"],
            "project_id": projects["a"]["id"],
            "user_id": users["a-member"]["id"],
            "cred_id": cred["id"],
            "role": "member",
            "token_id": users["a-member"]["token_id"],
            "kid": keys["keys"][0]["kid"],
            "name": "edge-a",
            "network_id": net["id"],
            "subnet_id": subnet["id"],
            "port_id": port["id"],
            "image_id": image["id"],
            "key_id": image_key["id"],
        }
        a_ids = [server["id"], projects["a"]["id"], users["a-member"]["id"], cred["id"]]
        a_ids += [net["id"], subnet["id"], port["id"], port["mac_address"], image["id"]]
        a_ids += [volume["id"], snapshot["id"]]
        a_ids += [bucket, instance["id"], op_id, package["id"]]
        yield World(app, tokens, params, a_ids)


def routes(app: Quart) -> list[tuple[str, str]]:
    found = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if any(rule.rule == r or rule.rule.startswith(r + "/") for r in API_ROOTS)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    return sorted(found, key=lambda r: (r[1], r[0]))


def fill(rule: str, params: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in params, f"no sample value for URL parameter {name!r} of {rule}"
        return params[name]

    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", one, rule)


async def call(world: World, who: str | None, method: str, rule: str) -> tuple[int, Any]:
    client = client_with(world.app, world.tokens[who] if who else None)
    body = sample_bodies(world).get((method, rule))
    kwargs = {"json": body} if body is not None else {}
    resp = await client.open(fill(rule, world.params), method=method, **kwargs)
    return resp.status_code, await resp.get_json()


async def test_routes_are_enumerated(world: World) -> None:
    found = routes(world.app)
    assert ("POST", "/v1/servers") in found
    assert ("PUT", "/v1/projects/<project_id>/users/<user_id>/roles/<role>") in found
    assert len(found) >= 30
    assert ("PUT", "/vnfpkgm/v1/vnf_packages/<package_id>/package_content") in found


async def test_no_token_is_401_everywhere_but_login(world: World) -> None:
    for method, rule in routes(world.app):
        if (method, rule) in PUBLIC:
            continue
        before = dump(world.app)
        status, body = await call(world, None, method, rule)
        assert status == 401, (method, rule, status, body)
        assert body["error"]["code"] == "unauthorized"
        assert dump(world.app) == before, (method, rule)


async def test_other_project_member_cannot_touch_project_a(world: World) -> None:
    for method, rule in routes(world.app):
        key = (method, rule)
        if key in PUBLIC or key in OWN_PROJECT_CREATES:
            continue
        before = dump(world.app)
        status, body = await call(world, "b-member", method, rule)
        if key in OPEN_READS:
            assert status == 200, (key, status, body)
            text = str(body)
            leaked = [i for i in world.a_ids if i in text]
            assert not leaked, (key, leaked)
        elif key in CROSS_PROJECT:
            assert status == CROSS_PROJECT[key], (key, status, body)
        else:
            assert status in (403, 404), (key, status, body)
        if status != 200:
            assert body["error"]["code"] in ("forbidden", "not_found"), (key, body)
        assert dump(world.app) == before, f"{method} {rule} changed the store"


async def test_reader_cannot_change_anything(world: World) -> None:
    mutations = [r for r in routes(world.app) if r[0] in MUTATING and r not in PUBLIC]
    assert mutations
    for method, rule in mutations:
        before = dump(world.app)
        status, body = await call(world, "a-reader", method, rule)
        assert status == 403, (method, rule, status, body)
        assert body["error"]["code"] == "forbidden"
        assert dump(world.app) == before, f"{method} {rule} changed the store"


async def test_reader_reads_own_project(world: World) -> None:
    status, body = await call(world, "a-reader", "GET", "/v1/servers/<server_id>")
    assert status == 200 and body["id"] == world.params["server_id"]
    status, body = await call(world, "a-reader", "GET", "/v1/servers")
    assert [s["id"] for s in body["servers"]] == [world.params["server_id"]]


async def test_member_acts_on_own_project(world: World) -> None:
    # The refusals above are about the other project, not about the routes.
    for method, rule in [
        ("GET", "/v1/servers/<server_id>"),
        ("POST", "/v1/servers/<server_id>/stop"),
        ("GET", "/v1/networks/<network_id>"),
        ("GET", "/v1/networks/<network_id>/subnets"),
        ("GET", "/v1/ports/<port_id>"),
        ("POST", "/v1/ports/<port_id>/attach"),
        ("POST", "/v1/ports/<port_id>/detach"),
        ("GET", "/v1/projects/<project_id>"),
        ("GET", "/v1/users/<user_id>/application_credentials/<cred_id>"),
        ("GET", "/v1/buckets/<string:bucket>"),
        ("GET", "/v1/buckets/<string:bucket>/objects/<path:key>"),
        ("GET", "/vnfpkgm/v1/vnf_packages/<package_id>"),
    ]:
        status, body = await call(world, "a-member", method, rule)
        assert status in (200, 202), (method, rule, status, body)


async def test_cloud_admin_sees_everything(world: World) -> None:
    _status, body = await call(world, "admin", "GET", "/v1/servers")
    assert [s["id"] for s in body["servers"]] == [world.params["server_id"]]
    _status, body = await call(world, "admin", "GET", "/v1/projects")
    assert {p["name"] for p in body["projects"]} == {"admin", "project-a", "project-b"}

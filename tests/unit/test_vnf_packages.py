"""/vnfpkgm/v1/vnf_packages through the real app: onboarding the shipped templates,
refused and broken packages (nothing kept), scoping, RBAC, delete rules, and the
lifecycle's helpers."""

from __future__ import annotations

import io
import random
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from quart import Quart

from central.cli_vnfpkg import csar_bytes
from central.refusal import Refusal
from central.vnf_packages import mark_in_use, vnfd_for
from tests.unit.identity_support import (
    PASSWORD,
    TokenClient,
    admin_client,
    client_with,
    login,
    make_app,
    make_project,
    make_user,
    ok,
    store_of,
)

ROOT = "/vnfpkgm/v1/vnf_packages"
TEMPLATES = Path(__file__).resolve().parents[2] / "vnf-templates"
VNFD_IDS = {
    "vrouter": "6a7a1f10-0001-4c3e-9d2b-000000000001",
    "vfirewall": "6a7a1f10-0002-4c3e-9d2b-000000000002",
    "upf": "6a7a1f10-0003-4c3e-9d2b-000000000003",
    "dns-cache": "6a7a1f10-0004-4c3e-9d2b-000000000004",
}


def zip_of(files: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def template_files(name: str) -> dict[str, bytes | str]:
    root = TEMPLATES / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def package_dir(app: Quart) -> Path:
    return app.extensions["skerry"].config.state_dir / "vnf-packages"


def leftovers(app: Quart) -> list[str]:
    path = package_dir(app)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def create(client: TokenClient, **body: Any) -> dict[str, Any]:
    return await ok(await client.post(ROOT, json=body), 201)


async def upload(client: TokenClient, package_id: str, data: bytes) -> tuple[int, Any]:
    resp = await client.put(
        f"{ROOT}/{package_id}/package_content",
        data=data,
        headers={"Content-Type": "application/zip"},
    )
    return resp.status_code, await resp.get_json()


async def onboarded(client: TokenClient, data: bytes) -> dict[str, Any]:
    pkg = await create(client)
    status, body = await upload(client, pkg["id"], data)
    assert status == 202, body
    return body


@pytest.fixture
async def small_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Quart]:
    app = make_app(tmp_path, monkeypatch, vnf_package_max_bytes=2 * 1024 * 1024)
    async with app.test_app():
        yield app


# -- onboarding ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VNFD_IDS))
async def test_each_template_onboards(app: Quart, admin: TokenClient, name: str) -> None:
    pkg = await create(admin, userDefinedData={"owner": "ops"})
    assert pkg["onboardingState"] == "CREATED"
    assert (pkg["operationalState"], pkg["usageState"]) == ("DISABLED", "NOT_IN_USE")
    assert pkg["_links"]["self"]["href"] == f"{ROOT}/{pkg['id']}"
    assert "vnfdId" not in pkg

    status, body = await upload(admin, pkg["id"], zip_of(template_files(name)))
    assert status == 202, body
    assert body["onboardingState"] == "ONBOARDED" and body["operationalState"] == "ENABLED"
    assert body["vnfdId"] == VNFD_IDS[name]
    assert body["vnfProvider"] and body["vnfProductName"] and body["vnfdVersion"]
    assert body["softwareImages"] and all(i["name"] for i in body["softwareImages"])
    assert body["checksum"]["algorithm"] == "SHA-256"
    assert body["userDefinedData"] == {"owner": "ops"}
    assert "onboardingFailureDetails" not in body
    assert leftovers(app) == [pkg["id"]]
    assert (package_dir(app) / pkg["id"] / "TOSCA-Metadata" / "TOSCA.meta").is_file()

    shown = await ok(await admin.get(f"{ROOT}/{pkg['id']}"))
    assert shown == body
    listed = await ok(await admin.get(ROOT))
    assert [p["id"] for p in listed] == [pkg["id"]]

    resp = await admin.get(f"{ROOT}/{pkg['id']}/vnfd")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    doc = yaml.safe_load(await resp.get_data())
    assert "topology_template" in doc or "imports" in doc
    resp = await admin.get(f"{ROOT}/{pkg['id']}/vnfd", headers={"Accept": "application/zip"})
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(await resp.get_data())).namelist()
    assert "TOSCA-Metadata/TOSCA.meta" in names
    assert f"Definitions/{name}.yaml" in names

    vnfd, path = vnfd_for(store_of(app), VNFD_IDS[name], None)
    assert vnfd.id == VNFD_IDS[name] and path.name == pkg["id"]


async def test_folder_zipped_by_the_cli_onboards(admin: TokenClient, tmp_path: Path) -> None:
    body = await onboarded(admin, csar_bytes(TEMPLATES / "vrouter"))
    assert body["vnfdId"] == VNFD_IDS["vrouter"]
    # A folder without TOSCA-Metadata gets one naming its entry descriptor.
    folder = tmp_path / "bare"
    (folder / "Definitions").mkdir(parents=True)
    source = TEMPLATES / "vfirewall" / "Definitions" / "vfirewall.yaml"
    (folder / "Definitions" / "vfirewall.yaml").write_bytes(source.read_bytes())
    names = zipfile.ZipFile(io.BytesIO(csar_bytes(folder))).namelist()
    assert "TOSCA-Metadata/TOSCA.meta" in names
    body = await onboarded(admin, csar_bytes(folder))
    assert body["vnfdId"] == VNFD_IDS["vfirewall"]


async def test_broken_descriptor_lists_errors_and_keeps_nothing(
    app: Quart, admin: TokenClient
) -> None:
    files = template_files("vrouter")
    text = files["Definitions/vrouter.yaml"]
    assert isinstance(text, bytes)
    broken = text.replace(b"num_virtual_cpu: ", b"num_virtual_cpu: many", 1)
    assert broken != text
    files["Definitions/vrouter.yaml"] = broken
    pkg = await create(admin)
    status, body = await upload(admin, pkg["id"], zip_of(files))
    assert status == 400, body
    details = body["error"]["details"]["onboardingFailureDetails"]
    assert details["errors"], details
    first = details["errors"][0]
    assert first["file"] == "Definitions/vrouter.yaml"
    assert "num_virtual_cpu" in first["path"] and first["line"]
    assert "Definitions/vrouter.yaml:" in details["detail"]
    assert body["error"]["details"]["fields"][0]["field"].startswith("Definitions/vrouter.yaml:")

    shown = await ok(await admin.get(f"{ROOT}/{pkg['id']}"))
    assert shown["onboardingState"] == "CREATED"
    assert shown["onboardingFailureDetails"] == details
    assert "vnfdId" not in shown
    assert leftovers(app) == []
    resp = await admin.get(f"{ROOT}/{pkg['id']}/vnfd")
    assert resp.status_code == 409

    # The same package takes a good upload afterwards; the failure is then gone.
    status, body = await upload(admin, pkg["id"], zip_of(template_files("vrouter")))
    assert status == 202, body
    assert "onboardingFailureDetails" not in body


def _symlink_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        info = zipfile.ZipInfo("Definitions/link.yaml")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
        for name, data in template_files("vrouter").items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "data", "expect"),
    [
        ("not-a-zip", b"this is not a zip at all", "not a zip"),
        ("zip-slip", zip_of({"../../evil.yaml": "x: 1", **template_files("vrouter")}), "zip slip"),
        ("absolute", zip_of({"/tmp/evil.yaml": "x: 1"}), "absolute"),
        ("symlink", _symlink_zip(), "symlink"),
        ("empty", b"", "empty"),
    ],
)
async def test_refused_packages(
    app: Quart, admin: TokenClient, case: str, data: bytes, expect: str
) -> None:
    pkg = await create(admin)
    status, body = await upload(admin, pkg["id"], data)
    assert status == 400, (case, body)
    assert expect in body["error"]["message"], (case, body)
    assert body["error"]["details"]["fields"][0]["field"].startswith("package_content")
    shown = await ok(await admin.get(f"{ROOT}/{pkg['id']}"))
    assert shown["onboardingState"] == "CREATED"
    assert expect in shown["onboardingFailureDetails"]["detail"]
    assert leftovers(app) == []
    assert not (Path(app.extensions["skerry"].config.state_dir).parent / "evil.yaml").exists()


async def test_zip_bomb_and_oversize(small_app: Quart) -> None:
    admin = await admin_client(small_app)
    # Over the 1 MiB app-wide body cap but within vnf_package_max_bytes: accepted.
    files = template_files("vrouter")
    blob = random.Random(6).randbytes(1536 * 1024)  # does not compress
    big = zip_of({**files, "Files/blob.bin": blob})
    assert 1024 * 1024 < len(big) < 2 * 1024 * 1024
    body = await onboarded(admin, big)
    assert body["onboardingState"] == "ONBOARDED"
    # A body over vnf_package_max_bytes: 413.
    pkg = await create(admin)
    status, body = await upload(admin, pkg["id"], big + big)
    assert status == 413, body
    assert "larger than" in body["error"]["message"]
    # A small zip that extracts to more than vnf_package_max_bytes: a zip bomb, 400.
    bomb = zip_of({**files, "Files/zeros.bin": b"\0" * (3 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    status, body = await upload(admin, pkg["id"], bomb)
    assert status == 400, body
    assert "extracted files larger than" in body["error"]["message"]
    assert sorted(leftovers(small_app)) == sorted([(await ok(await admin.get(ROOT)))[0]["id"]])


async def test_same_vnfd_twice_is_409(app: Quart, admin: TokenClient) -> None:
    first = await onboarded(admin, zip_of(template_files("upf")))
    pkg = await create(admin)
    status, body = await upload(admin, pkg["id"], zip_of(template_files("upf")))
    assert status == 409, body
    assert body["error"]["details"]["field"] == "vnfdId"
    shown = await ok(await admin.get(f"{ROOT}/{pkg['id']}"))
    assert shown["onboardingState"] == "CREATED"
    assert leftovers(app) == [first["id"]]


async def test_upload_twice_is_409(admin: TokenClient) -> None:
    body = await onboarded(admin, zip_of(template_files("dns-cache")))
    status, again = await upload(admin, body["id"], zip_of(template_files("dns-cache")))
    assert status == 409 and again["error"]["details"]["onboardingState"] == "ONBOARDED"


# -- state changes and delete -------------------------------------------------------------


async def test_enable_disable_delete_rules(app: Quart, admin: TokenClient) -> None:
    pkg = await onboarded(admin, zip_of(template_files("vfirewall")))
    url = f"{ROOT}/{pkg['id']}"
    store = store_of(app)
    resp = await admin.delete(url)
    assert resp.status_code == 409  # ENABLED
    assert (await admin.patch(url, json={"operationalState": "ENABLED"})).status_code == 409
    changed = await ok(await admin.patch(url, json={"operationalState": "DISABLED"}))
    assert changed == {"operationalState": "DISABLED"}
    with pytest.raises(Refusal) as refused:
        vnfd_for(store, VNFD_IDS["vfirewall"], None)
    assert refused.value.status == 409 and "DISABLED" in refused.value.message
    await ok(await admin.patch(url, json={"operationalState": "ENABLED"}))
    assert vnfd_for(store, VNFD_IDS["vfirewall"], None)[0].id == VNFD_IDS["vfirewall"]

    mark_in_use(store, pkg["id"], True)
    await ok(await admin.patch(url, json={"operationalState": "DISABLED"}))
    assert (await ok(await admin.get(url)))["usageState"] == "IN_USE"
    resp = await admin.delete(url)
    assert resp.status_code == 409  # IN_USE
    assert (await resp.get_json())["error"]["details"]["usageState"] == "IN_USE"
    mark_in_use(store, pkg["id"], False)
    assert (await admin.delete(url)).status_code == 204
    assert (await admin.get(url)).status_code == 404
    assert leftovers(app) == []
    with pytest.raises(Refusal):
        vnfd_for(store, VNFD_IDS["vfirewall"], None)
    with pytest.raises(Refusal):
        mark_in_use(store, pkg["id"], True)


async def test_created_package_deletes_and_patch_needs_onboarded(admin: TokenClient) -> None:
    pkg = await create(admin)
    url = f"{ROOT}/{pkg['id']}"
    resp = await admin.patch(url, json={"operationalState": "ENABLED"})
    assert resp.status_code == 409
    resp = await admin.patch(url, json={"operationalState": "ON"})
    assert resp.status_code == 400
    changed = await ok(await admin.patch(url, json={"userDefinedData": {"a": "b"}}))
    assert changed == {"userDefinedData": {"a": "b"}}
    assert (await ok(await admin.get(url)))["userDefinedData"] == {"a": "b"}
    assert (await admin.delete(url)).status_code == 204


# -- scoping and roles --------------------------------------------------------------------


async def test_projects_and_roles(app: Quart, admin: TokenClient) -> None:
    clients = {}
    for p in ("a", "b"):
        project = await make_project(admin, f"project-{p}")
        for role in ("member", "reader"):
            who = f"{p}-{role}"
            await make_user(admin, who, project["id"], role)
            clients[who] = client_with(
                app, (await login(app, who, PASSWORD, f"project-{p}"))["token"]
            )
    a, b, reader = clients["a-member"], clients["b-member"], clients["a-reader"]
    pkg = await onboarded(a, zip_of(template_files("vrouter")))
    url = f"{ROOT}/{pkg['id']}"
    store = store_of(app)
    a_project = store.one("SELECT project_id FROM vnf_packages")["project_id"]  # type: ignore[index]

    # Another project: not found, everywhere; its list is empty.
    for method, path, kwargs in [
        ("GET", url, {}),
        ("GET", f"{url}/vnfd", {}),
        ("PATCH", url, {"json": {"operationalState": "DISABLED"}}),
        ("DELETE", url, {}),
        ("PUT", f"{url}/package_content", {"data": b"x"}),
    ]:
        resp = await b.open(path, method=method, **kwargs)
        assert resp.status_code == 404, (method, path)
    assert await ok(await b.get(ROOT)) == []
    # vnfd_for is scoped the same way.
    with pytest.raises(Refusal):
        vnfd_for(store, VNFD_IDS["vrouter"], "some-other-project")
    assert vnfd_for(store, VNFD_IDS["vrouter"], a_project)[0].id == VNFD_IDS["vrouter"]
    # The same descriptor may be onboarded by another project.
    other = await onboarded(b, zip_of(template_files("vrouter")))
    assert other["vnfdId"] == VNFD_IDS["vrouter"]

    # A reader reads, and changes nothing.
    assert (await ok(await reader.get(url)))["id"] == pkg["id"]
    assert (await reader.post(ROOT, json={})).status_code == 403
    assert (await reader.patch(url, json={"operationalState": "DISABLED"})).status_code == 403
    assert (await reader.delete(url)).status_code == 403
    resp = await reader.put(f"{url}/package_content", data=b"x")
    assert resp.status_code == 403
    # No token: 401.
    assert (await client_with(app, None).get(ROOT)).status_code == 401

    # Audited like the other resources.
    actions = {r["action"] for r in store.query("SELECT action FROM audit")}
    assert f"POST {ROOT}" in actions
    assert f"PUT {ROOT}/{{package_id}}/package_content" in actions


async def test_onboarding_interrupted_by_a_restart_is_reset(app: Quart, admin: TokenClient) -> None:
    pkg = await create(admin)
    store = store_of(app)
    with store.transaction() as db:
        db.conn.execute("UPDATE vnf_packages SET onboarding_state = 'PROCESSING'")
    stale = package_dir(app) / ".extract-0123"
    stale.mkdir()
    (stale / "half.yaml").write_text("x: 1")
    del app.extensions["skerry.vnf_packages"]  # as after a restart
    shown = await ok(await admin.get(f"{ROOT}/{pkg['id']}"))
    assert shown["onboardingState"] == "CREATED"
    assert "central stopped" in shown["onboardingFailureDetails"]["detail"]
    assert leftovers(app) == []
    status, body = await upload(admin, pkg["id"], zip_of(template_files("vrouter")))
    assert status == 202, body

"""Identity with a real skerry-central (LocalCluster): bootstrap, log-ins, the
CLI, and no secret in any log or audit file the run wrote."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.client import ApiFailure, Client
from central.localcluster import REPO, LocalCluster

pytestmark = pytest.mark.e2e
USER_PASSWORD = "e2e-user-password-1"


@pytest.fixture
def central(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "run")
    c.start_central()
    try:
        yield c
    finally:
        c.close()
        print(f"--- central.log (tail) ---\n{c.log_tail('central', 20)}")


def skerry(cluster: LocalCluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("skerry")), "--api", cluster.client.base_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, **env},
    )


def private_key_material(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        pems = [r[0] for r in conn.execute("SELECT private_pem FROM signing_keys")]
    finally:
        conn.close()
    assert pems
    return [line for pem in pems for line in pem.splitlines() if "-----" not in line]


def test_identity_end_to_end_leaves_no_secret_behind(central: LocalCluster) -> None:
    admin = central.client
    me = admin.get("/v1/auth/token")
    assert me["is_cloud_admin"] and me["user"]["name"] == "admin"
    tokens = [admin.token or ""]

    project = admin.post("/v1/projects", {"name": "tenant-1"})
    user = admin.post("/v1/users", {"name": "alice", "password": USER_PASSWORD})
    admin.put(f"/v1/projects/{project['id']}/users/{user['id']}/roles/member")
    admin.post("/v1/sites", {"name": "edge-x"})

    alice = Client(admin.base_url)
    tokens.append(alice.login("alice", USER_PASSWORD, "tenant-1")["token"])
    server = alice.post(
        "/v1/servers",
        {
            "name": "vm1",
            "site": "edge-x",
            "image": "tiny",
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
        },
    )
    assert server["project_id"] == project["id"]
    cred = alice.post(f"/v1/users/{user['id']}/application_credentials", {"name": "ci"})
    robot = Client(admin.base_url)
    tokens.append(robot.login_app_credential(cred["id"], cred["secret"])["token"])
    assert [s["id"] for s in robot.get("/v1/servers")["servers"]] == [server["id"]]

    # Refusals: bad password, bad token, the other project's view.
    with pytest.raises(ApiFailure) as err:
        Client(admin.base_url).login("alice", "wrong-" + USER_PASSWORD, "tenant-1")
    assert err.value.status == 401
    with pytest.raises(ApiFailure) as err:
        Client(admin.base_url, token=tokens[1] + "x").get("/v1/servers")
    assert err.value.status == 401

    # The CLI: login prints an export line; commands use SKERRY_TOKEN.
    out = skerry(
        central, "login", "--user", "alice", "--project", "tenant-1", SKERRY_PASSWORD=USER_PASSWORD
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().removeprefix("export SKERRY_TOKEN=")
    tokens.append(token)
    listed = skerry(central, "--json", "servers", "list", SKERRY_TOKEN=token)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [server["id"]]
    denied = skerry(central, "servers", "list")
    assert denied.returncode == 1 and "401" in denied.stderr
    rotated = skerry(central, "--json", "keys", "rotate", SKERRY_TOKEN=tokens[0])
    assert rotated.returncode == 0, rotated.stderr
    audit = skerry(central, "--json", "audit", "list", "--user", "alice", SKERRY_TOKEN=tokens[0])
    assert audit.returncode == 0 and "POST /v1/servers" in audit.stdout

    alice.delete(f"/v1/auth/tokens/{alice.get('/v1/auth/token')['token_id']}")
    with pytest.raises(ApiFailure) as err:
        alice.get("/v1/servers")
    assert err.value.status == 401

    # A restart keeps identity: the bootstrap does not run again, old tokens still work.
    central.kill_central(signal.SIGTERM)
    central.start_central()
    assert robot.get("/v1/servers")["servers"]
    events = central.client.get("/v1/audit?limit=1000")["events"]
    assert any(e["action"] == "POST /v1/auth/tokens" and e["result"] == "401" for e in events)

    # Nothing secret in any log or audit file this run wrote.
    secrets = [central.admin_password, USER_PASSWORD, cred["secret"], *tokens]
    secrets += private_key_material(central.workdir / "central" / "central.db")
    files = [p for p in central.workdir.rglob("*") if p.suffix in (".log", ".jsonl")]
    assert any(p.name == "audit.jsonl" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} chars) is in {path.name}"


def test_bootstrap_command_once(tmp_path: Path) -> None:
    conf = tmp_path / "central.yaml"
    conf.write_text(f"state_dir: {tmp_path / 'state'}\nlog_level: DEBUG\n")
    cmd = [
        str(Path(sys.executable).with_name("skerry-central")),
        "--config",
        str(conf),
        "bootstrap",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKERRY_BOOTSTRAP")}
    first = subprocess.run(
        cmd, input="stdin-password-123\n", capture_output=True, text=True, env=env, timeout=30
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        cmd, input="stdin-password-123\n", capture_output=True, text=True, env=env, timeout=30
    )
    assert again.returncode == 1 and "refused" in again.stderr
    for out in (first, again):
        assert "stdin-password-123" not in out.stdout + out.stderr

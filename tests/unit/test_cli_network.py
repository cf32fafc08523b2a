"""``skerry networks|subnets|ports`` and ``servers create``'s EPA/port options, run as the
command line runs them: ``central.cli.main`` over HTTP against the real app served by
hypercorn on a free port (the CLI's urllib client in a thread, the app on the test's loop)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from central import orchestrator
from central.cli import main
from central.client import ApiFailure, Client
from tests.unit.identity_support import ADMIN_PASSWORD, free_port, make_app, store_of
from tests.unit.network_api_support import inventory, numa_node, report_inventory


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Skerry:
    """Runs ``skerry --api URL ARGV...`` as the cloud admin; returns exit code and output."""

    def __init__(self, app: Quart, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.app = app
        self.url = url
        self.capsys = capsys

    async def __call__(self, *argv: str) -> Ran:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, ["--api", self.url, *argv])
        out, err = self.capsys.readouterr()
        return Ran(code, out, err)

    async def ok(self, *argv: str) -> str:
        ran = await self(*argv)
        assert ran.code == 0, ran
        assert ran.err == "", ran
        return ran.out

    async def json(self, *argv: str) -> Any:
        return json.loads(await self.ok("--json", *argv))

    async def fails(self, *argv: str) -> str:
        """The command exits non-zero, prints nothing on stdout; returns its stderr."""
        ran = await self(*argv)
        assert ran.code != 0, ran
        assert ran.out == "", ran
        return ran.err.strip()


def table(out: str) -> list[dict[str, str]]:
    """A table the CLI printed, back into rows (columns start where their headers do)."""
    header, *lines = out.rstrip("\n").split("\n")
    spans = [(m.group().lower(), m.start()) for m in re.finditer(r"\S+", header)]
    ends = [start for _, start in spans[1:]] + [None]
    return [
        {name: line[start:end].strip() for (name, start), end in zip(spans, ends, strict=True)}
        for line in lines
    ]


async def _wait_for_api(url: str, serving: asyncio.Task[None]) -> str:
    """Log in as the bootstrapped admin once the app serves; returns the token."""
    last: ApiFailure | None = None
    for _ in range(200):
        if serving.done():
            serving.result()  # raises why it stopped
        try:
            issued = await asyncio.to_thread(Client(url).login, "admin", ADMIN_PASSWORD, "admin")
            return str(issued["token"])
        except ApiFailure as exc:
            last = exc
            await asyncio.sleep(0.05)
    raise TimeoutError(f"central did not answer at {url}: {last}")


@pytest.fixture
async def skerry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Skerry]:
    """central serving over HTTP with sites edge-a (inventory with VFs on physnet ``fast`` and
    2MB pages on both nodes) and edge-b; ``SKERRY_TOKEN`` is the cloud admin's."""
    app = make_app(tmp_path, monkeypatch)
    conf = HypercornConfig()
    conf.bind = [f"127.0.0.1:{free_port()}"]
    conf.accesslog = None
    conf.errorlog = None
    conf.graceful_timeout = 1
    url = f"http://{conf.bind[0]}"
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(app, conf, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        monkeypatch.setenv("SKERRY_TOKEN", await _wait_for_api(url, serving))
        cli = Skerry(app, url, capsys)
        for site in ("edge-a", "edge-b"):
            await cli.ok("sites", "create", site)
        nodes = [numa_node(0, pages_2m=512), numa_node(1, pages_2m=512)]
        report_inventory(app, "edge-a", inventory(nodes=nodes))
        yield cli
    finally:
        stop.set()
        await serving


async def test_network_and_subnet_lifecycle_in_tables(skerry: Skerry) -> None:
    net = await skerry.json("networks", "create", "mgmt", "--site", "edge-a", "--mtu", "1400")
    assert (net["segmentation"], net["mtu"], net["subnets"]) == ("vxlan", 1400, [])
    sub = await skerry.json(
        "subnets", "create", net["id"], "10.0.0.0/24", "--gateway", "10.0.0.254",
        "--pool", "10.0.0.10-10.0.0.20", "--pool", "10.0.0.100-10.0.0.110",
    )  # fmt: skip
    assert sub["gateway"] == "10.0.0.254"
    await skerry.ok("subnets", "create", net["id"], "fd00:1::/64")
    vlan = await skerry.json(
        "networks", "create", "uplink", "--site", "edge-a", "--provider",
        "--segmentation", "vlan", "--segmentation-id", "100", "--physnet", "phys0",
    )  # fmt: skip

    rows = {r["name"]: r for r in table(await skerry.ok("networks", "list"))}
    assert rows["mgmt"] == {
        "id": net["id"][:8],
        "name": "mgmt",
        "site": "edge-a",
        "kind": "tenant",
        "segmentation": "vxlan",
        "segmentation_id": str(net["segmentation_id"]),
        "physnet": "-",
        "mtu": "1400",
        "status": "BUILD",
        "subnets": "10.0.0.0/24,fd00:1::/64",
    }
    uplink = rows["uplink"]
    assert (uplink["kind"], uplink["segmentation"], uplink["segmentation_id"]) == (
        "provider",
        "vlan",
        "100",
    )
    assert (uplink["physnet"], uplink["mtu"], uplink["subnets"]) == ("phys0", "1500", "-")

    subnets = {r["cidr"]: r for r in table(await skerry.ok("subnets", "list", net["id"]))}
    assert subnets["10.0.0.0/24"]["id"] == sub["id"]
    assert subnets["10.0.0.0/24"]["allocation_pools"] == "10.0.0.10-10.0.0.20,10.0.0.100-10.0.0.110"
    assert subnets["fd00:1::/64"]["ip_version"] == "6"

    # --json prints the API's own JSON; show is the API's record.
    listed = await skerry.json("networks", "list")
    assert {n["id"] for n in listed} == {net["id"], vlan["id"]}
    shown = await skerry.json("networks", "show", net["id"])
    assert [s["cidr"] for s in shown["subnets"]] == ["10.0.0.0/24", "fd00:1::/64"]

    assert await skerry.ok("subnets", "delete", net["id"], sub["id"]) == (
        f"subnet {sub['id']} deleted\n"
    )
    assert await skerry.ok("networks", "delete", vlan["id"]) == f"network {vlan['id']} deleted\n"
    rows = table(await skerry.ok("networks", "list"))
    assert [(r["name"], r["subnets"]) for r in rows] == [("mgmt", "fd00:1::/64")]


async def test_network_refusals_print_the_api_message(skerry: Skerry) -> None:
    args = ("networks", "create", "v", "--site", "edge-a", "--segmentation", "vlan")
    assert await skerry.fails(*args) == (
        "skerry: 400 invalid_request: a vlan network needs its VLAN id (1-4094)"
    )
    await skerry.ok(*args, "--segmentation-id", "100")
    assert await skerry.fails(*args, "--segmentation-id", "100") == (
        "skerry: 409 conflict: VLAN 100 is in use at site 'edge-a'"
    )
    assert await skerry.fails(
        "networks", "create", "v", "--site", "edge-b", "--segmentation", "vlan",
        "--segmentation-id", "7",
    ) == "skerry: 409 conflict: site edge-b has not reported its VLAN support yet"  # fmt: skip
    assert await skerry.fails("networks", "create", "x", "--site", "nowhere") == (
        "skerry: 404 not_found: site 'nowhere' does not exist"
    )
    net = await skerry.json("networks", "create", "n", "--site", "edge-a")
    await skerry.ok("subnets", "create", net["id"], "10.1.0.0/24")
    assert await skerry.fails("subnets", "create", net["id"], "10.1.0.128/25") == (
        "skerry: 409 conflict: 10.1.0.128/25 overlaps subnet 10.1.0.0/24 of this network"
    )
    assert "invalid_request" in await skerry.fails("subnets", "create", net["id"], "10.1.0.1/24")
    assert await skerry.fails("networks", "show", "no-such-id") == (
        "skerry: 404 not_found: network 'no-such-id' does not exist"
    )


async def test_ports_with_mac_fixed_ips_and_attachment(skerry: Skerry) -> None:
    net = await skerry.json("networks", "create", "access", "--site", "edge-a")
    v4 = await skerry.json("subnets", "create", net["id"], "10.0.0.0/24")
    v6 = await skerry.json("subnets", "create", net["id"], "fd00::/64")
    given = await skerry.json(
        "ports", "create", net["id"], "--name", "uplink", "--mac", "02:00:00:00:00:01",
        "--ip", "10.0.0.50", "--ip", "fd00::50",
    )  # fmt: skip
    assert given["mac_address"] == "02:00:00:00:00:01"
    picked = await skerry.json("ports", "create", net["id"], "--subnet", v6["id"])
    assert picked["fixed_ips"] == [{"subnet_id": v6["id"], "ip_address": "fd00::2"}]
    in_subnet = await skerry.json(
        "ports", "create", net["id"], "--subnet", v4["id"], "--ip", "10.0.0.60"
    )
    assert in_subnet["fixed_ips"] == [{"subnet_id": v4["id"], "ip_address": "10.0.0.60"}]

    rows = {r["id"]: r for r in table(await skerry.ok("ports", "list"))}
    assert rows[given["id"][:8]] == {
        "id": given["id"][:8],
        "name": "uplink",
        "network": net["id"][:8],
        "site": "edge-a",
        "mac_address": "02:00:00:00:00:01",
        "fixed_ips": "10.0.0.50,fd00::50",
        "vnic_type": "normal",
        "server": "-",
        "status": "BUILD",
        "binding": "-",
        "reason": "-",
    }
    assert rows[picked["id"][:8]]["fixed_ips"] == "fd00::2"
    assert rows[picked["id"][:8]]["mac_address"].startswith("fa:16:3e:")

    # The site reports the port plugged: the table shows the tap.
    vm = await skerry.json("servers", "create", "vm1", "--site", "edge-a", "--port", given["id"])
    tap = {"kind": "tap", "tap": "sk-t-1234abcd", "bridge": "sk-b-1234abcd"}
    report = {"servers": {}, "ports": {given["id"]: {"state": "active", "binding": tap}}}
    orchestrator.apply_status(store_of(skerry.app), "edge-a", 5, report)
    row = {r["id"]: r for r in table(await skerry.ok("ports", "list"))}[given["id"][:8]]
    assert (row["server"], row["status"], row["binding"]) == (
        vm["id"][:8],
        "ACTIVE",
        "tap sk-t-1234abcd",
    )

    detached = await skerry.json("ports", "detach", given["id"])
    assert detached["server_id"] is None
    attached = await skerry.json("ports", "attach", picked["id"], vm["id"])
    assert attached["server_id"] == vm["id"]
    assert await skerry.fails("ports", "attach", picked["id"], "elsewhere") == (
        f"skerry: 409 conflict: the port is attached to server {vm['id']!r}; detach it first"
    )
    assert (await skerry.json("ports", "show", picked["id"]))["server_id"] == vm["id"]

    # Refusals come back as the API's message, non-zero exit, nothing on stdout.
    assert await skerry.fails("ports", "create", net["id"], "--ip", "10.0.0.50") == (
        "skerry: 409 conflict: address 10.0.0.50 is in use"
    )
    assert await skerry.fails("ports", "create", net["id"], "--mac", "02:00:00:00:00:01") == (
        "skerry: 409 conflict: mac in use: 02:00:00:00:00:01"
    )
    assert await skerry.fails("ports", "create", net["id"], "--ip", "192.168.9.9") == (
        "skerry: 400 invalid_request: 192.168.9.9 is in no subnet of the port's network"
    )
    assert await skerry.fails("networks", "delete", net["id"]) == (
        "skerry: 409 conflict: the network still has ports"
    )
    assert await skerry.fails("subnets", "delete", net["id"], v4["id"]) == (
        "skerry: 409 conflict: the subnet has allocated addresses"
    )

    for p in (given, picked, in_subnet):
        assert await skerry.ok("ports", "delete", p["id"]) == f"port {p['id']} deleted\n"
    assert table(await skerry.ok("ports", "list")) == []
    await skerry.ok("networks", "delete", net["id"])


async def test_epa_server_with_a_direct_port(skerry: Skerry) -> None:
    fast = await skerry.json(
        "networks", "create", "fast", "--site", "edge-a", "--provider",
        "--segmentation", "vlan", "--segmentation-id", "40", "--physnet", "fast",
    )  # fmt: skip
    await skerry.ok("subnets", "create", fast["id"], "10.40.0.0/24")
    vf = await skerry.json("ports", "create", fast["id"], "--direct", "--name", "data0")
    assert vf["vnic_type"] == "direct" and vf["numa_node"] is None
    vm = await skerry.json(
        "servers", "create", "vnf1", "--site", "edge-a", "--vcpus", "2", "--ram-mb", "256",
        "--dedicated", "--page-size", "2MB", "--numa-nodes", "2", "--port", vf["id"],
        "--meta", "role=upf", "--meta", "peer=10.40.0.1", "--meta", "empty=",
    )  # fmt: skip
    flavor = vm["flavor"]
    assert (flavor["cpu_policy"], flavor["mem_page_size"], flavor["numa_nodes"]) == (
        "dedicated",
        "2MB",
        2,
    )
    assert vm["numa_placement"] == [0, 1]
    assert vm["metadata"] == {"role": "upf", "peer": "10.40.0.1", "empty": ""}
    servers = table(await skerry.ok("servers", "list"))
    assert servers[0]["flavor"] == "2c/256M/1G dedicated 2MB numa=0,1"

    bound = await skerry.json("ports", "show", vf["id"])
    assert (bound["server_id"], bound["numa_node"]) == (vm["id"], 0)
    binding = {"kind": "vf", "pci": "0000:11:01.0", "pf": "pf0", "vf": 1, "numa_node": 1}
    report = {"servers": {}, "ports": {vf["id"]: {"state": "active", "binding": binding}}}
    orchestrator.apply_status(store_of(skerry.app), "edge-a", 3, report)
    row = table(await skerry.ok("ports", "list"))[0]
    assert (row["name"], row["vnic_type"], row["server"]) == ("data0", "direct", vm["id"][:8])
    assert (row["fixed_ips"], row["binding"]) == ("10.40.0.2", "vf 0000:11:01.0 node 1")

    # What the site cannot give is refused with the API's reason.
    ran = await skerry(
        "servers", "create", "vnf2", "--site", "edge-a", "--page-size", "1GB", "--ram-mb", "1024"
    )
    assert ran.code == 1 and ran.out == ""
    assert ran.err.startswith("skerry: 409 conflict: ") and "1GB" in ran.err
    plain = await skerry.json("networks", "create", "plain", "--site", "edge-a")
    assert await skerry.fails("ports", "create", plain["id"], "--direct") == (
        f"skerry: 409 conflict: vnic_type 'direct' needs a network with a physnet; network "
        f"{plain['id']!r} (tenant vxlan) has none"
    )
    refusal = await skerry.fails(
        "servers", "create", "vnf3", "--site", "edge-a", "--meta", "hostname=x"
    )
    assert refusal.startswith("skerry: 400 invalid_request: invalid field 'metadata': ")
    assert refusal.endswith("key 'hostname' is set by the site itself")


@pytest.mark.parametrize(
    "argv",
    [
        ["subnets", "create", "N", "10.0.0.0/24", "--pool", "10.0.0.5"],
        ["servers", "create", "vm", "--site", "edge-a", "--meta", "novalue"],
        ["servers", "create", "vm", "--site", "edge-a", "--page-size", "4KB"],
        ["networks", "create", "n", "--site", "edge-a", "--segmentation", "geneve"],
    ],
)
def test_malformed_arguments_never_reach_the_api(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # No central at this address: argparse refuses before any call is made.
    with pytest.raises(SystemExit) as exc:
        main(["--api", "http://127.0.0.1:9", *argv])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err

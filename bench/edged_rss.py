"""Memory bench: resident set size of one ``skerry-edged`` running 50 servers.

``bench/edged_rss.py [--servers 50] [--idle 5]`` starts a real
``skerry-central`` (one site) and a real ``skerry-edged`` on libvirt's test
driver (``test:///<tmp>/node.xml``, disks still made by ``qemu-img``, a fake
image with dummy kernel and initrd). It creates the servers through
``POST /v1/servers``, waits until all are ACTIVE, lets edged idle, and reads
VmRSS of the edged process from /proc. For context it first prints the RSS
of a bare Python process that only imports zmq, libvirt, sqlite3 and yaml::

    baseline_rss_mb=B
    RESULT edged_rss servers=50 rss_mb=X
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from harness import (
    VENV_BIN,
    Api,
    Central,
    install_deadline,
    rss_mb,
    stop_process,
    tail,
    write_site_key,
)

from edged.drivers.libvirt_testnode import write_test_node

SITE = "rss-site"
BASELINE_CODE = "import time, zmq, libvirt, sqlite3, yaml; time.sleep(30)"


def baseline_rss_mb(settle_s: float = 2.0) -> float:
    """VmRSS of a bare Python that imported what edged imports at its core."""
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_CODE])
    try:
        time.sleep(settle_s)
        if proc.poll() is not None:
            raise RuntimeError("baseline process exited early")
        return rss_mb(proc.pid)
    finally:
        stop_process(proc)


def write_edge_files(workdir: Path, hub_endpoint: str) -> Path:
    """Node XML, a fake ``tiny`` image and edged's config; returns the config path."""
    uri = write_test_node(workdir, cpus=64, memory_mb=65536)
    image = workdir / "images" / "tiny"
    image.mkdir(parents=True)
    (image / "vmlinuz").write_bytes(b"not a kernel")
    (image / "initrd.gz").write_bytes(b"not an initrd")
    config = {
        "site": SITE,
        "central_endpoint": hub_endpoint,
        "state_dir": str(workdir / "edge-state"),
        "libvirt_uri": uri,
        "image_dir": str(workdir / "images"),
        "reconcile_interval_s": 5.0,
        "log_level": "INFO",
    }
    path = workdir / "edged.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def create_servers(api: Api, count: int) -> None:
    flavor = {"vcpus": 1, "ram_mb": 64, "disk_gb": 1}
    for i in range(count):
        body = {"name": f"vm-{i:03d}", "site": SITE, "flavor": flavor, "image": "tiny"}
        api.request("POST", "/v1/servers", body)


def wait_active(api: Api, count: int, timeout_s: float) -> float:
    """Seconds until ``count`` servers are ACTIVE; raises with the statuses seen."""
    start = time.monotonic()
    statuses: dict[str, int] = {}
    while time.monotonic() - start < timeout_s:
        servers = api.request("GET", "/v1/servers")["servers"]
        statuses = {}
        for server in servers:
            statuses[server["status"]] = statuses.get(server["status"], 0) + 1
        if len(servers) == count and statuses.get("ACTIVE", 0) == count:
            return time.monotonic() - start
        errors = [s["reason"] for s in servers if s["status"] == "ERROR"]
        if errors:
            raise RuntimeError(f"servers in ERROR: {errors[:3]}")
        time.sleep(0.5)
    raise TimeoutError(f"not all {count} servers ACTIVE after {timeout_s}s: {statuses}")


def run(workdir: Path, servers: int, idle_s: float) -> float:
    """edged's VmRSS in MiB with ``servers`` ACTIVE servers after ``idle_s`` idle."""
    edged: subprocess.Popen[bytes] | None = None
    edged_log = workdir / "edged.log"
    with Central(workdir) as central:
        try:
            api = central.start()
            key_file = workdir / "site.key"
            public_key = write_site_key(key_file)
            api.request("POST", "/v1/sites", {"name": SITE, "public_key": public_key})
            config = write_edge_files(workdir, central.hub_endpoint)
            edge = yaml.safe_load(config.read_text())
            edge.update(curve_secret_key_file=str(key_file), central_public_key=central.public_key)
            config.write_text(yaml.safe_dump(edge))
            with edged_log.open("ab") as log:
                edged = subprocess.Popen(
                    [str(VENV_BIN / "skerry-edged"), "--config", str(config)],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                )
            create_servers(api, servers)
            took = wait_active(api, servers, timeout_s=60)
            print(f"  {servers} servers ACTIVE after {took:.1f}s; idling {idle_s:.0f}s", flush=True)
            time.sleep(idle_s)
            if edged.poll() is not None:
                raise RuntimeError("skerry-edged exited")
            return rss_mb(edged.pid)
        except Exception:
            print(f"central log tail:\n{tail(central.log_path)}", file=sys.stderr)
            print(f"edged log tail:\n{tail(edged_log)}", file=sys.stderr)
            raise
        finally:
            stop_process(edged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--idle", type=float, default=5.0, help="idle seconds before reading RSS")
    parser.add_argument("--deadline", type=int, default=110, help="abort after this many seconds")
    args = parser.parse_args(argv)
    if shutil.which("qemu-img") is None:
        print("qemu-img is required (the test driver's disks are real qcow2 files)")
        return 2
    install_deadline(args.deadline)
    print(f"baseline_rss_mb={baseline_rss_mb():.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="skerry-rss-") as tmp:
        rss = run(Path(tmp), args.servers, args.idle)
    print(f"RESULT edged_rss servers={args.servers} rss_mb={rss:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

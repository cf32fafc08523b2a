"""Objects at a site with real daemons: the bucket central made, served offline."""

from __future__ import annotations

import hashlib
import os
import signal
import urllib.error
import urllib.request
from typing import Any

import pytest

from central.client import ApiFailure
from central.localcluster import LocalCluster, wait_for
from tests.e2e.support import add_site
from tests.e2e.test_identity_sites import in_sync, member

pytestmark = pytest.mark.e2e


def raw(method: str, url: str, token: str, data: bytes | None = None) -> tuple[int, Any, bytes]:
    """One request with raw bytes (the JSON client does not stream objects)."""
    req = urllib.request.Request(url, data=data, method=method, headers={"X-Auth-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_site_serves_its_buckets_with_central_killed(
    cluster: LocalCluster, sites: list[str]
) -> None:
    site = sites[0]
    add_site(cluster, site)
    alice, _ = member(cluster, "proj-a", "alice")
    bob, _ = member(cluster, "proj-b", "bob")
    made = alice.put("/v1/buckets/cams", {"sites": [site], "replicate_to_central": True})
    assert made["bucket"]["policy"]["sites"] == [site]
    data = os.urandom(512 * 1024)  # past the site's 64 KiB API body limit
    central_url = f"{cluster.client.base_url}/v1/buckets/cams/objects/at-central"
    assert raw("PUT", central_url, alice.token, data)[0] == 201
    wait_for(lambda: in_sync(cluster, site), 30, "site holds the bucket")
    local = cluster.local_api(site, alice.token)
    wait_for(
        lambda: [b["name"] for b in local.get("/v1/buckets")["buckets"]] == ["cams"],
        30,
        "the site made the bucket of its document",
    )

    cluster.kill_central(signal.SIGKILL)
    base = f"http://127.0.0.1:{cluster.local_api_ports[site]}/v1/buckets/cams/objects"
    status, headers, _ = raw("PUT", f"{base}/offline/1.bin", alice.token, data)
    assert status == 201 and headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    status, headers, body = raw("GET", f"{base}/offline/1.bin", alice.token)
    assert (status, body) == (200, data)
    assert headers["X-Object-Hlc"].endswith(f"-{site}")
    listed = local.get("/v1/buckets/cams?prefix=offline/")
    assert [o["key"] for o in listed["objects"]] == ["offline/1.bin"]
    # Another project cannot see it; the site does not make buckets.
    assert raw("GET", f"{base}/offline/1.bin", bob.token)[0] == 404
    with pytest.raises(ApiFailure) as err:
        local.put("/v1/buckets/new-bucket", {})
    assert err.value.status == 405
    assert raw("DELETE", f"{base}/offline/1.bin", alice.token)[0] == 204
    assert raw("GET", f"{base}/offline/1.bin", alice.token)[0] == 404

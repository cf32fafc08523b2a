"""1,000 garbage frames at central's ROUTER and at an edged: both keep serving."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest
import zmq

from central.localcluster import LocalCluster, free_port, wait_for
from edged import wire
from tests.e2e.support import add_site

pytestmark = pytest.mark.e2e

FRAMES = 1000


def garbage(rng: random.Random, site: str) -> list[bytes]:
    """One invalid message, of a kind picked at random."""
    kind = rng.randrange(7)
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 200))]
    if kind == 1:
        return [rng.randbytes(8), rng.randbytes(rng.randrange(0, 300))]
    if kind == 2:
        return [b"status", b'{"site": "' + site.encode() + b'", "epoch": 1}']
    if kind == 3:
        return [b"heartbeat", b"[1, 2, 3]"]
    if kind == 4:
        return [
            b"ack",
            json.dumps({"site": site, "epoch": True, "seq": 1, "generation": 1}).encode(),
        ]
    if kind == 5:
        return [b"hello", b"x" * (1024 * 1024 + 10)]
    return [b"desired", b"\xff\xfe" + rng.randbytes(50), b"extra"]


def test_garbage_at_central(cluster: LocalCluster, sites: list[str]) -> None:
    site = sites[0]
    add_site(cluster, site)
    wait_for(lambda: cluster.site(site)["state"] == "up", 30, "site up")
    generation = cluster.site(site)["desired_generation"]
    rng = random.Random(11)
    ctx = zmq.Context()
    try:
        socks = []
        for i in range(8):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 2000)
            if i % 2:
                s.setsockopt(zmq.ROUTING_ID, f"intruder-{i}".encode())
            s.connect(cluster.hub_endpoint)
            socks.append(s)
        for n in range(FRAMES):
            socks[n % len(socks)].send_multipart(garbage(rng, site))
        wait_for(lambda: cluster.client.get("/v1/hub")["dropped_total"] >= FRAMES, 30, "drops")
        stats = cluster.client.get("/v1/hub")
        assert stats["dropped_total"] == FRAMES, str(stats["dropped"])

        # Replays: a valid heartbeat from a registered site (one with no edged
        # running, so no live identity is taken over), sent again verbatim.
        cluster.client.post("/v1/sites", {"name": sites[1]})
        impostor = ctx.socket(zmq.DEALER)
        impostor.setsockopt(zmq.ROUTING_ID, sites[1].encode())
        impostor.connect(cluster.hub_endpoint)
        beat = wire.Encoder(sites[1]).encode(wire.HEARTBEAT, generation=0)
        for _ in range(5):
            impostor.send_multipart(beat)
        wait_for(lambda: cluster.client.get("/v1/hub")["dropped"].get("replay") == 4, 15, "replay")
        # Raw bytes that are not a ZMTP greeting (libzmq may still read some as
        # legacy ZMTP/1.0 frames, which are then dropped like the rest).
        with socket.create_connection(("127.0.0.1", cluster.hub_port)) as raw:
            raw.sendall(rng.randbytes(4096))
    finally:
        ctx.destroy(linger=0)
    # Nothing changed state, and the channel still works.
    assert cluster.site(site)["desired_generation"] == generation
    assert cluster.site(site)["state"] == "up"
    cluster.create_server(site, "after-garbage", power="stopped")
    wait_for(lambda: cluster.site(site)["acked_generation"] == generation + 1, 15, "ack")


def _recv_until(sock: zmq.Socket, kind: str, check=lambda m: True, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(200):
            frames = sock.recv_multipart()
            msg = wire.decode(frames[1:])
            if msg.type == kind and check(msg):
                return msg
    raise TimeoutError(f"no {kind} from edged")


def test_garbage_at_edged(cluster: LocalCluster, sites: list[str]) -> None:
    """A stand-in central (a bare ROUTER) feeds an edged garbage, then a valid document."""
    site = sites[0]
    port = free_port()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    # A plain ROUTER drops silently at its send high-water mark; queue everything.
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    try:
        cluster.start_edge(site, central_endpoint=f"tcp://127.0.0.1:{port}")
        hello = _recv_until(router, wire.HELLO)
        assert hello["last_generation"] == 0
        ident = site.encode()
        enc = wire.Encoder("central")
        rng = random.Random(5)
        valid = enc.encode(
            wire.DESIRED,
            site=site,
            generation=1,
            document={"site": site, "generation": 1, "servers": []},
        )
        router.send_multipart([ident, *valid])
        _recv_until(router, wire.ACK, lambda m: m["generation"] == 1)
        sent = 0
        while sent < FRAMES:
            if sent % 100 == 0:
                frames = valid  # replayed: exactly the frames accepted before
            elif sent % 100 == 1:
                frames = enc.encode(wire.DESIRED, site="someone-else", generation=9, document={})
            else:
                frames = garbage(rng, site)
            router.send_multipart([ident, *frames])
            sent += 1
        good = enc.encode(
            wire.DESIRED,
            site=site,
            generation=2,
            document={"site": site, "generation": 2, "servers": []},
        )
        router.send_multipart([ident, *good])
        _recv_until(router, wire.ACK, lambda m: m["generation"] == 2)
        status = _recv_until(
            router,
            wire.STATUS,
            lambda m: m["health"]["link"]["dropped_total"] >= FRAMES,
            timeout=30,
        )
        assert status["health"]["link"]["dropped_total"] == FRAMES
        assert status["health"]["held_generation"] == 2
        assert cluster.edges[site].poll() is None, "edged died"
    finally:
        ctx.destroy(linger=0)

"""1,000 garbage frames at central's ROUTER and at an edged: both keep serving.

The channel is CURVE: garbage from peers without an enrolled key never reaches
the hub (their handshakes are refused and counted), so the 1,000 frames come
from an authenticated but misbehaving peer: a DEALER holding the enrolled key
of a registered site that has no edged running.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time

import pytest
import zmq

from central import zap
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


def dealer(
    ctx: zmq.Context, cluster: LocalCluster, routing_id: str | None, pair: zap.KeyPair | None
) -> zmq.Socket:
    """A DEALER at central's hub: CURVE with ``pair``, or plain (NULL) without."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 2000)
    if routing_id is not None:
        s.setsockopt(zmq.ROUTING_ID, routing_id.encode())
    if pair is not None:
        s.setsockopt(zmq.CURVE_SERVERKEY, cluster.central_public_key.encode())
        s.setsockopt(zmq.CURVE_PUBLICKEY, pair.public.encode())
        s.setsockopt(zmq.CURVE_SECRETKEY, pair.secret.encode())
    s.connect(cluster.hub_endpoint)
    return s


def test_garbage_at_central(cluster: LocalCluster, sites: list[str]) -> None:
    site, misbehaving = sites
    add_site(cluster, site)
    wait_for(lambda: cluster.site(site)["state"] == "up", 30, "site up")
    cluster.enroll(misbehaving)  # registered, key enrolled, no edged running
    generation = cluster.site(site)["desired_generation"]
    rng = random.Random(11)
    ctx = zmq.Context()
    try:
        # Unauthenticated garbage: no CURVE at all, or a key nobody enrolled.
        # None of it reaches the hub; the unknown key's handshake is refused.
        strangers = [
            dealer(ctx, cluster, None, None),
            dealer(ctx, cluster, site, None),
            dealer(ctx, cluster, site, zap.new_keypair()),
            dealer(ctx, cluster, "intruder", zap.new_keypair()),
        ]
        for n in range(100):
            # A refused peer's pipe is gone: its sends would block, so never wait.
            with contextlib.suppress(zmq.Again):
                strangers[n % len(strangers)].send_multipart(garbage(rng, site), zmq.NOBLOCK)
        wait_for(lambda: cluster.client.get("/v1/hub")["refused_total"] >= 2, 15, "refusals")
        time.sleep(1)
        stats = cluster.client.get("/v1/hub")
        assert stats["refused"]["unenrolled_key"] >= 2
        assert stats["dropped_total"] == 0, str(stats["dropped"])

        # An authenticated but misbehaving peer: every frame reaches the hub and is dropped.
        sock = dealer(ctx, cluster, misbehaving, cluster.site_keys(misbehaving))
        for _ in range(FRAMES):
            sock.send_multipart(garbage(rng, misbehaving))
        wait_for(lambda: cluster.client.get("/v1/hub")["dropped_total"] >= FRAMES, 30, "drops")
        stats = cluster.client.get("/v1/hub")
        assert stats["dropped_total"] == FRAMES, str(stats["dropped"])

        # Replays: a valid heartbeat from that site, sent again verbatim.
        beat = wire.Encoder(misbehaving).encode(wire.HEARTBEAT, generation=0)
        for _ in range(5):
            sock.send_multipart(beat)
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
    """A stand-in central (a bare CURVE ROUTER) feeds an edged garbage, then a valid document."""
    site = sites[0]
    port = free_port()
    server = zap.new_keypair()  # the edged trusts this key as central's
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.CURVE_SERVER, 1)
    router.setsockopt(zmq.CURVE_SECRETKEY, server.secret.encode())
    # A plain ROUTER drops silently at its send high-water mark; queue everything.
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    try:
        cluster.start_edge(
            site, central_endpoint=f"tcp://127.0.0.1:{port}", central_public_key=server.public
        )
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

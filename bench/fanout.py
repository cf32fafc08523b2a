"""Fan-out bench: one fleet-wide settings change reaching N sites through central's hub.

``bench/fanout.py --sites N [--rounds R]`` starts a real ``skerry-central``,
makes N CURVE key pairs, creates N sites with their public keys through the API
(enrolled, not timed) and connects N CURVE DEALER sockets (routing id = site
name, each with its site's key; central's ZAP handler admits them) from this
process. The sockets speak the real control protocol
(``edged.wire``): hello, a heartbeat every second carrying the held generation,
and ``ack{generation}`` for every ``desired``. All N are driven by one thread
through epoll on the sockets' ZMQ_FD descriptors.

Timed: from just before ``PUT /v1/settings`` until every socket has received
the new generation and sent its ack (median of R rounds). The baseline,
``raw_seconds``, is the same swarm against a bare pyzmq ROUTER in a separate
process that sends each site a ``desired`` message of the same size and
waits for the N acks; it is a CURVE server too (same encryption cost), with
no ZAP handler. The last line printed is::

    RESULT fanout sites=N seconds=S raw_seconds=R ratio=X
"""

from __future__ import annotations

import argparse
import collections
import math
import multiprocessing
import multiprocessing.connection
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from harness import (
    VENV_BIN,
    Api,
    Central,
    free_port,
    install_deadline,
    new_keypair,
    raise_nofile,
    stop_process,
    tail,
)

from edged import wire

HEARTBEAT_S = 1.0
ROUND_TIMEOUT_S = 60.0
DEFAULT_DESIRED_BYTES = 206  # type + body of a settings-only document
# N CURVE handshakes at once queue behind each other (and behind ZAP at central):
# give each one long enough rather than drop and redo it.
HANDSHAKE_IVL_MS = 60_000


def site_names(count: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(count)]


def make_context() -> zmq.Context[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
    ctx.MAX_SOCKETS = 65536
    return ctx


class Swarm:
    """N DEALERs speaking the edged protocol, driven by one thread.

    ``arm(target)`` starts a measurement: ``done`` is set (and ``done_at``
    stamped) when the last socket still below ``target`` has sent its ack.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        names: list[str],
        keys: list[tuple[str, str]],
        server_key: str,
    ) -> None:
        self.names = names
        self.sockets: list[zmq.Socket[bytes]] = []
        self.encoders = [wire.Encoder(name) for name in names]
        self.guards = [wire.ReplayGuard() for _ in names]
        self.held = [0] * len(names)
        self.counters: collections.Counter[str] = collections.Counter()
        self.desired_frame_bytes = 0
        self.lock = threading.Lock()
        self.target = 0
        self.remaining = 0
        self.done = threading.Event()
        self.done_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._epoll = select.epoll()
        self._by_fd: dict[int, int] = {}
        for index, name in enumerate(names):
            sock = ctx.socket(zmq.DEALER)
            public, secret = keys[index]
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
            sock.setsockopt(zmq.ROUTING_ID, name.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.connect(endpoint)
            fd = sock.getsockopt(zmq.FD)
            self._by_fd[fd] = index
            self._epoll.register(fd, select.EPOLLIN)
            self.sockets.append(sock)

    # -- protocol ----------------------------------------------------------------------

    def _send(self, index: int, kind: str, **fields: Any) -> None:
        frames = self.encoders[index].encode(kind, **fields)
        try:
            self.sockets[index].send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters[f"send_failed_{kind}"] += 1
            return
        self.counters[f"sent_{kind}"] += 1
        # A send may consume the ZMQ_FD edge of pending input: look now.
        self._drain(index)

    def _drain(self, index: int) -> None:
        sock = self.sockets[index]
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(index, frames)

    def _handle(self, index: int, frames: list[bytes]) -> None:
        try:
            msg = wire.decode(frames)
        except wire.FrameError as exc:
            self.counters[f"dropped_{exc.reason}"] += 1
            return
        if msg.site != self.names[index] or not self.guards[index].accept("central", msg):
            self.counters["dropped"] += 1
            return
        self.counters[f"received_{msg.type}"] += 1
        if msg.type != wire.DESIRED:
            return
        self.desired_frame_bytes = len(frames[0]) + len(frames[1])
        before = self.held[index]
        self.held[index] = max(before, msg["generation"])
        self._send(index, wire.ACK, generation=self.held[index])
        with self.lock:
            if before < self.target <= self.held[index]:
                self.remaining -= 1
                if self.remaining == 0:
                    self.done_at = time.monotonic()
                    self.done.set()

    # -- driving -----------------------------------------------------------------------

    def arm(self, target: int) -> None:
        """Measure the next time every socket acks ``target``."""
        with self.lock:
            self.target = target
            self.remaining = sum(1 for held in self.held if held < target)
            self.done.clear()
            if self.remaining == 0:
                self.done_at = time.monotonic()
                self.done.set()

    def _loop(self) -> None:
        count = len(self.sockets)
        start = time.monotonic()
        # Heartbeats staggered over one interval, like N independent edged processes.
        due = collections.deque((start + HEARTBEAT_S * i / count, i) for i in range(count))
        for index in range(count):
            self._send(index, wire.HELLO, last_generation=0)
        while not self._stop.is_set():
            now = time.monotonic()
            while due and due[0][0] <= now:
                when, index = due.popleft()
                self._send(index, wire.HEARTBEAT, generation=self.held[index])
                due.append((when + HEARTBEAT_S, index))
            timeout = min(max(due[0][0] - time.monotonic(), 0.0), 0.05)
            for fd, _events in self._epoll.poll(timeout):
                self._drain(self._by_fd[fd])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="swarm", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._epoll.close()
        for sock in self.sockets:
            sock.close(linger=0)
        self.sockets.clear()


# -- central ---------------------------------------------------------------------------


def create_sites(api: Api, names: list[str], keys: list[tuple[str, str]]) -> None:
    """Register every site with its CURVE public key (enrolled at creation)."""
    for name, (public, _secret) in zip(names, keys, strict=True):
        api.request("POST", "/v1/sites", {"name": name, "public_key": public})


def sites_in_sync(api: Api, count: int) -> tuple[bool, int]:
    """(all ``count`` sites up with acked == desired, their common desired generation)."""
    sites = api.request("GET", "/v1/sites")["sites"]
    gens = {s["desired_generation"] for s in sites}
    ok = (
        len(sites) == count
        and len(gens) == 1
        and all(
            s["state"] == "up" and s["acked_generation"] == s["desired_generation"] for s in sites
        )
    )
    return ok, max(gens, default=0)


class NotInSync(Exception):
    """Central did not show every site up and acked in time."""


def wait_in_sync(api: Api, count: int, timeout_s: float) -> int:
    """Poll GET /v1/sites until all ``count`` sites are up and acked; their generation."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        try:
            ok, generation = sites_in_sync(api, count)
        except OSError as exc:  # central too busy to answer within the HTTP timeout
            last_error = f"GET /v1/sites: {exc!r}"
            continue
        if ok:
            return generation
        last_error = "answered, but not every site is up and acked"
        time.sleep(0.5 if count <= 1000 else 2.0)
    raise NotInSync(f"sites not all up and acked after {timeout_s:.0f}s ({last_error})")


def central_rounds(api: Api, swarm: Swarm, count: int, rounds: int) -> list[float]:
    """Time ``rounds`` fleet-wide settings changes until every site has acked."""
    results = []
    for round_no in range(rounds):
        generation = wait_in_sync(api, count, timeout_s=60)
        swarm.arm(generation + 1)
        t0 = time.monotonic()
        api.request("PUT", "/v1/settings", {"stop_grace_s": 6.0 if round_no % 2 == 0 else 5.0})
        put_s = time.monotonic() - t0
        if not swarm.done.wait(ROUND_TIMEOUT_S):
            raise TimeoutError(f"round {round_no}: {swarm.remaining} sites did not ack")
        results.append(swarm.done_at - t0)
        print(
            f"  central round {round_no}: {results[-1]:.4f}s (PUT answered after {put_s:.4f}s)",
            flush=True,
        )
    wait_in_sync(api, count, timeout_s=60)  # the acks reached central's records too
    return results


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into collapsed stacks at ``out`` until SIGINT."""
    cmd = [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-o", str(out)]
    cmd += ["--format", "raw", "--rate", "250", "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach before the measured part
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        stop_process(proc)


def run_central(
    workdir: Path,
    names: list[str],
    keys: list[tuple[str, str]],
    rounds: int,
    profile: Path | None,
    profile_from: str,
    sync_timeout_s: float,
) -> tuple[list[float], int]:
    """Central rounds' seconds and the size of a desired message (type + body bytes).

    When central never shows every site in sync, the rounds list is empty.
    """
    with Central(workdir, site_down_after_s=10.0, resend_after_s=5.0) as central:
        profiler = None
        try:
            api = central.start(api_timeout_s=20.0)
            t = time.monotonic()
            create_sites(api, names, keys)
            print(
                f"  created {len(names)} sites with enrolled keys in {time.monotonic() - t:.1f}s",
                flush=True,
            )
            if profile is not None and profile_from == "connect":
                profiler = start_profiler(central.pid, profile)
            ctx = make_context()
            swarm = Swarm(ctx, central.hub_endpoint, names, keys, central.public_key)
            try:
                swarm.start()
                t = time.monotonic()
                try:
                    wait_in_sync(api, len(names), timeout_s=sync_timeout_s)
                except NotInSync as exc:
                    print(f"  FAILED: {exc}", flush=True)
                    print(f"  swarm counters: {dict(swarm.counters)}", flush=True)
                    return [], swarm.desired_frame_bytes
                print(
                    f"  all up (CURVE handshakes, ZAP) and acked in {time.monotonic() - t:.1f}s",
                    flush=True,
                )
                if profile is not None and profile_from == "rounds":
                    profiler = start_profiler(central.pid, profile)
                results = central_rounds(api, swarm, len(names), rounds)
                stop_profiler(profiler)
                print(f"  swarm counters: {dict(swarm.counters)}", flush=True)
                return results, swarm.desired_frame_bytes
            finally:
                stop_profiler(profiler)
                swarm.close()
                ctx.term()
                api.close()
        except Exception:
            print(f"central log tail:\n{tail(central.log_path)}", file=sys.stderr)
            raise


# -- bare ROUTER baseline --------------------------------------------------------------


def desired_frames(encoder: wire.Encoder, site: str, generation: int, size: int) -> list[bytes]:
    """A valid ``desired`` message for ``site`` padded to ``size`` bytes (type + body)."""
    bare = encoder.encode(wire.DESIRED, site=site, generation=generation, document={"pad": ""})
    pad = max(size - len(bare[0]) - len(bare[1]), 0)
    return encoder.encode(
        wire.DESIRED, site=site, generation=generation, document={"pad": "x" * pad}
    )


def raw_router(
    endpoint: str,
    count: int,
    size: int,
    secret_key: str,
    pipe: multiprocessing.connection.Connection,
) -> None:
    """Bare CURVE ROUTER (child process): on ``generation`` from the pipe, send all, await acks."""
    raise_nofile()
    ctx = make_context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key.encode())
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    encoder = wire.Encoder("central")
    peers: set[bytes] = set()
    try:
        while len(peers) < count:
            peers.add(sock.recv_multipart()[0])
        pipe.send("ready")
        while (generation := pipe.recv()) is not None:
            for peer in peers:
                frames = desired_frames(encoder, peer.decode(), generation, size)
                sock.send_multipart([peer, *frames])
            acked = 0
            while acked < count:
                _ident, kind, body = sock.recv_multipart()
                if kind == b"ack" and wire.decode([kind, body])["generation"] >= generation:
                    acked += 1
            pipe.send(time.monotonic())
    finally:
        sock.close(linger=0)
        ctx.term()


def run_raw(names: list[str], keys: list[tuple[str, str]], rounds: int, size: int) -> list[float]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server_public, server_secret = new_keypair()
    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=raw_router,
        args=(endpoint, len(names), size, server_secret, child),
        daemon=True,
    )
    proc.start()
    ctx = make_context()
    swarm: Swarm | None = None
    try:
        swarm = Swarm(ctx, endpoint, names, keys, server_public)
        swarm.start()
        if not parent.poll(90) or parent.recv() != "ready":
            raise TimeoutError("raw ROUTER did not see every DEALER")
        results = []
        for round_no in range(rounds):
            generation = round_no + 1
            swarm.arm(generation)
            t0 = time.monotonic()
            parent.send(generation)
            if not swarm.done.wait(ROUND_TIMEOUT_S) or not parent.poll(ROUND_TIMEOUT_S):
                raise TimeoutError(f"raw round {round_no} did not finish")
            parent.recv()
            results.append(swarm.done_at - t0)
            print(f"  raw round {round_no}: {results[-1]:.4f}s", flush=True)
            time.sleep(0.5)
        parent.send(None)
        return results
    finally:
        if swarm is not None:
            swarm.close()
        ctx.term()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, required=True, help="number of sites (N)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median is kept)")
    parser.add_argument("--deadline", type=int, default=115, help="abort after this many seconds")
    parser.add_argument(
        "--sync-timeout", type=float, default=60.0, help="seconds to wait for all sites in sync"
    )
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of central to FILE")
    parser.add_argument(
        "--profile-from",
        choices=("connect", "rounds"),
        default="rounds",
        help="profile from the sockets' connect, or only over the timed rounds",
    )
    args = parser.parse_args(argv)
    install_deadline(args.deadline)
    raise_nofile()
    names = site_names(args.sites)
    keys = [new_keypair() for _ in names]
    with tempfile.TemporaryDirectory(prefix="skerry-fanout-") as tmp:
        central_s, size = run_central(
            Path(tmp), names, keys, args.rounds, args.profile, args.profile_from, args.sync_timeout
        )
    size = size or DEFAULT_DESIRED_BYTES  # central never sent one: use a typical size
    print(f"  desired message size: {size} bytes", flush=True)
    raw_s = run_raw(names, keys, args.rounds, size)
    raw = statistics.median(raw_s)
    # No central rounds (sites never in sync) is reported as an infinite time.
    seconds = statistics.median(central_s) if central_s else math.inf
    print(
        f"RESULT fanout sites={args.sites} seconds={seconds:.4f} "
        f"raw_seconds={raw:.4f} ratio={seconds / raw:.2f}",
        flush=True,
    )
    return 0 if central_s else 1


if __name__ == "__main__":
    sys.exit(main())

"""Object replication site -> central over loopback against a plain file copy.

Prints::

    RESULT replication mb=M seconds=S raw_seconds=R ratio=R/S

* A source ObjectStore (files backend, temp dir) is filled with ``--mb`` MiB
  (256) of random objects of mixed sizes, 4 KiB to 16 MiB (log-uniform), not
  timed.
* **seconds**: the real replication components, as the daemons run them: a
  :class:`edged.replication.sender.Sender` in this process (CURVE DEALER,
  durable cursor) sends everything to a :class:`edged.replication.receiver.Receiver`
  (CURVE ROUTER with a ZAP handler) running in a separate process (spawned,
  like central) over its own ObjectStore; from the first look at the changes
  until every object is acknowledged and the cursor is at the end. The
  receiver hashes each object once (etag check), fsyncs each blob, and commits
  what arrived together in one group (directory fsync + index transaction)
  before acking it. Checked afterwards: every object at the receiver with the
  same etag.
* **raw_seconds**: the same blobs copied file by file into a fresh directory
  (``shutil.copyfileobj`` into a new file, ``fsync`` of each file), in the same run,
  before the replication.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import free_port, install_deadline
from edged.replication.sender import Settings

MIN_SIZE = 4 * 1024
MAX_SIZE = 16 * 1024 * 1024


def sizes(total: int, rng: random.Random) -> list[int]:
    out: list[int] = []
    left = total
    while left > 0:
        size = int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))
        size = min(size, left)
        out.append(size)
        left -= size
    return out


def fill(store, total: int) -> int:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    block = os.urandom(MAX_SIZE + 4096)
    for i, size in enumerate(sizes(total, rng)):
        start = rng.randrange(0, 4096)
        store.put("bench", f"obj-{i:05d}", [block[start : start + size]])
    return i + 1


def thread_cpu(pid: int | str = "self") -> dict[str, float]:
    """CPU seconds (user + system) per thread name of a process, threads of one name summed."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        name = "main" if task.name == str(os.getpid() if pid == "self" else pid) else name
        name = name.rstrip("0123456789_/") or name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def idle_seconds() -> float:
    """CPU-seconds all CPUs of the machine have been idle (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> str:
    parts = [f"{k} {after[k] - before.get(k, 0.0):.2f}" for k in sorted(after)]
    return ", ".join(p for p in parts if not p.endswith(" 0.00"))


def time_lookups(index) -> list[float]:  # type: ignore[no-untyped-def]
    """Sum the wall time of ``index.version`` calls (the receiver's look-ups) into [0]."""
    total = [0.0]
    version = index.version

    def timed(bucket: str, key: str):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return version(bucket, key)
        finally:
            total[0] += time.perf_counter() - t

    index.version = timed
    return total


def receiver_main(root: str, endpoint: str, secret: str, client_public: str, conn) -> None:  # type: ignore[no-untyped-def]
    import zmq.asyncio

    from edged.objects.stores import open_store
    from edged.replication.peers import PeerKeys
    from edged.replication.receiver import Receiver

    async def run() -> None:
        store = open_store("central", Path(root) / "central")
        store.ensure_bucket("p1", "bench", {})
        lookups = time_lookups(store.index)
        ctx = zmq.asyncio.Context()
        zap = PeerKeys(ctx)
        zap.admit({client_public: "site-a"})
        zap.start()
        receiver = Receiver(store, Path(root) / "staging", zap.site_of)
        receiver.bind(ctx, endpoint, secret)
        receiver.start()
        cpu = thread_cpu()
        conn.send("ready")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # "stop"
        rows = store.index.query("SELECT key, etag FROM versions WHERE bucket = 'bench'")
        stats = {**receiver.stats(), "cpu_s": cpu_delta(cpu, thread_cpu())}
        stats["lookup_s"] = round(lookups[0], 3)
        conn.send({"etags": {r["key"]: r["etag"] for r in rows}, "stats": stats})
        await receiver.stop()
        zap.stop()
        ctx.destroy(linger=0)
        store.close()

    if os.environ.get("B2PROF"):
        import cProfile

        cProfile.runctx("asyncio.run(run())", globals(), locals(), os.environ["B2PROF"])
    else:
        asyncio.run(run())


async def replicate(
    store, root: Path, endpoint: str, server_public: str, keys, in_flight: int
) -> float:  # type: ignore[no-untyped-def]
    import zmq.asyncio

    from edged.replication.cursors import CursorStore
    from edged.replication.sender import Channel, Sender, Target

    ctx = zmq.asyncio.Context()
    cursors = CursorStore(root / "replication.db")
    channel = Channel(
        ctx, "site-a", keys.public, keys.secret, Target("central", endpoint, server_public)
    )
    sender = Sender(
        "site-a", store, cursors, channel, lambda: ["bench"], Settings(in_flight=in_flight)
    )
    channel.open()
    try:
        started = time.perf_counter()
        while await sender.pass_once():
            pass
        seconds = time.perf_counter() - started
    finally:
        await channel.close()
        ctx.destroy(linger=0)
    last = store.changes_since("bench", 0, 1_000_000)[-1].seq
    if cursors.get("bench", "central").seq != last:
        raise SystemExit("cursor did not reach the last change")
    cursors.close()
    return seconds


def raw_copy(blobs: list[Path], dest: Path) -> float:
    dest.mkdir()
    started = time.perf_counter()
    for i, src in enumerate(blobs):
        with open(src, "rb") as fin, open(dest / f"{i:05d}", "xb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256, help="MiB of objects (default 256)")
    parser.add_argument("--in-flight", type=int, default=Settings.in_flight, help="objects at once")
    parser.add_argument("--deadline", type=int, default=300, help="seconds before giving up")
    parser.add_argument("--perf", help="record `perf record -a -g` of the timed window here")
    args = parser.parse_args()
    install_deadline(args.deadline)

    from edged.curvekeys import new_keypair
    from edged.objects.stores import open_store

    with tempfile.TemporaryDirectory(prefix="skerry-repl-bench-") as tmp:
        root = Path(tmp)
        store = open_store("site-a", root / "site")
        store.ensure_bucket("p1", "bench", {})
        count = fill(store, args.mb * 1024 * 1024)
        rows = store.index.query("SELECT key, etag, blob_id FROM versions WHERE bucket = 'bench'")
        blobs = [store.backend.path(r["blob_id"]) for r in rows]
        total = sum(p.stat().st_size for p in blobs)
        print(f"{count} objects, {total / 2**20:.1f} MiB", flush=True)

        server, client = new_keypair(), new_keypair()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(
            target=receiver_main, args=(tmp, endpoint, server.secret, client.public, child)
        )
        proc.start()
        try:
            if not parent.poll(60) or parent.recv() != "ready":
                raise SystemExit("receiver did not start")
            raw_seconds = raw_copy(blobs, root / "raw")
            perf = None
            if args.perf:
                perf = subprocess.Popen(["perf", "record", "-q", "-a", "-g", "-o", args.perf])
                time.sleep(0.5)
            cpu = os.times()
            idle = idle_seconds()
            try:
                coro = replicate(
                    store, root / "site", endpoint, server.public, client, args.in_flight
                )
                if os.environ.get("B2PROF_SENDER"):
                    import cProfile

                    prof = cProfile.Profile()
                    seconds = prof.runcall(asyncio.run, coro)
                    prof.dump_stats(os.environ["B2PROF_SENDER"])
                else:
                    seconds = asyncio.run(coro)
            finally:
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait()
            end = os.times()
            print(f"machine idle during the replication: {idle_seconds() - idle:.2f} CPU-s")
            print(f"sender cpu_s: user {end.user - cpu.user:.2f} sys {end.system - cpu.system:.2f}")
            parent.send("stop")
            result = parent.recv()
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        want = {r["key"]: r["etag"] for r in rows}
        if result["etags"] != want:
            raise SystemExit("the receiver does not hold exactly the source's objects")
        print(f"receiver: {result['stats']}", flush=True)  # incl. commit_batches
        store.close()
    mb = total / 2**20
    print(
        f"RESULT replication mb={mb:.0f} seconds={seconds:.4f} "
        f"raw_seconds={raw_seconds:.4f} ratio={raw_seconds / seconds:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The floor under bench/replication.py: the same bytes through a protocol-free CURVE pipe.

A bare pyzmq CURVE DEALER (this process) -> ROUTER (a spawned process) over
loopback, the same 256 MiB mix of files (4 KiB..16 MiB, log-uniform, seed 7)
in 1 MiB frames, 4 files in flight; the receiver only hashes (sha256) and
writes each file and fsyncs it in a pool of 8 threads before answering. No
asyncio, index, staging, directory fsync or offer/want/ack exchange. Prints
``floor seconds=S sender_cpu=C receiver_cpu=C``; not a RESULT bench, a
measuring stick (see bench/README.md, replication).
"""

import hashlib
import math
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path

import zmq

MIN_SIZE, MAX_SIZE = 4 * 1024, 16 * 1024 * 1024


def sizes(total, rng):
    out, left = [], total
    while left > 0:
        s = min(int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))), left)
        out.append(s)
        left -= s
    return out


def receiver(endpoint, secret, dest, conn):
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.curve_server = True
    s.curve_secretkey = secret
    s.bind(endpoint)
    conn.send("ready")
    t0 = os.times()
    n = 0
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(8)

    def fin(f, who, dig):
        f.flush()
        os.fsync(f.fileno())
        f.close()
        return who, dig

    futs = []
    while True:
        while not s.poll(1):
            for x in [x for x in futs if x.done()]:
                futs.remove(x)
                s.send_multipart(list(x.result()))
        frames = s.recv_multipart(copy=False)
        name = frames[1].bytes
        if name == b"STOP":
            break
        f = open(os.path.join(dest, name.decode()), "wb")  # noqa: SIM115 - closed by fin() in the fsync pool
        h = hashlib.sha256()
        while True:
            data = frames[2].buffer
            h.update(data)
            f.write(data)
            if frames[3].bytes == b"last":
                break
            frames = s.recv_multipart(copy=False)
        futs.append(pool.submit(fin, f, frames[0].bytes, h.hexdigest().encode()))
        done = [x for x in futs if x.done()]
        for x in done:
            futs.remove(x)
            s.send_multipart(list(x.result()))

        n += 1
    for x in futs:
        s.send_multipart(list(x.result()))
    t1 = os.times()
    conn.send(round(t1.user - t0.user + t1.system - t0.system, 2))


def main():
    mb = 256
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        dst = Path(tmp) / "dst"
        dst.mkdir()
        rng = random.Random(7)
        block = os.urandom(MAX_SIZE + 4096)
        files = []
        for i, size in enumerate(sizes(mb << 20, rng)):
            p = src / f"{i:05d}"
            st = rng.randrange(0, 4096)
            p.write_bytes(block[st : st + size])
            files.append(p)
        pub, sec = zmq.curve_keypair()
        cpub, csec = zmq.curve_keypair()
        endpoint = f"tcp://127.0.0.1:{random.randrange(20000, 60000)}"
        a, b = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(target=receiver, args=(endpoint, sec, str(dst), b))
        proc.start()
        assert a.recv() == "ready"
        ctx = zmq.Context()
        d = ctx.socket(zmq.DEALER)
        d.curve_serverkey = pub
        d.curve_publickey = cpub
        d.curve_secretkey = csec
        d.connect(endpoint)
        d.send_multipart([b"x", b"", b"last"])
        d.recv()  # handshake + warm file 'x'
        t = time.perf_counter()
        c0 = os.times()
        inflight = 0
        for p in files:
            with open(p, "rb") as f:
                chunk = f.read(1 << 20)
                while True:
                    nxt = f.read(1 << 20)
                    d.send_multipart(
                        [p.name.encode(), chunk, b"last" if not nxt else b"more"], copy=False
                    )
                    if not nxt:
                        break
                    chunk = nxt
            inflight += 1
            while inflight > 4:
                d.recv()
                inflight -= 1
        while inflight:
            d.recv()
            inflight -= 1
        secs = time.perf_counter() - t
        c1 = os.times()
        d.send_multipart([b"STOP", b"", b"last"])
        rc = a.recv()
        proc.join()
        print(
            f"floor seconds={secs:.4f} "
            f"sender_cpu={c1.user - c0.user + c1.system - c0.system:.2f} receiver_cpu={rc}"
        )


if __name__ == "__main__":
    main()

"""CURVE keys: key files, Z85 validation, edged's key check, and the hub's ZAP + key binding.

The hub tests run the real Hub (real store, ZeroMQ on loopback) without the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from central import zap
from central.config import CentralConfig
from central.hub import Hub
from central.store import Store, now
from edged import curvekeys, link, wire
from edged.config import EdgeConfig
from edged.configfile import ConfigError
from edged.main import main as edged_main

# -- Z85 ------------------------------------------------------------------------------


def test_z85_key_accepts_real_keys() -> None:
    public, secret = zmq.curve_keypair()
    for key in (public.decode(), secret.decode()):
        assert curvekeys.z85_key_problem(key) is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "40"),
        ("abc", "40"),
        ("a" * 41, "40"),
        ("~" * 40, "Z85"),  # '~' is not in the Z85 alphabet
        ("#" * 40, "Z85"),  # each 5-char group overflows 2**32
        ("é" * 40, "Z85"),
        (None, "string"),
        (40, "string"),
    ],
)
def test_z85_key_refuses(value: object, needle: str) -> None:
    assert needle in (curvekeys.z85_key_problem(value) or "")


def test_fingerprint_is_short() -> None:
    public = zmq.curve_keypair()[0]
    assert zap.fingerprint(public) == public.decode()[:8]
    assert zap.fingerprint(None) == "-"


# -- key files ------------------------------------------------------------------------


def test_key_file_written_0600_and_read_by_both_sides(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    pair = zap.new_keypair()
    zap.write_key_file(path, pair)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert zap.read_key_file(path) == pair
    # edged parses what central writes (the two sides do not share code).
    assert curvekeys.parse_key_file(path.read_text(), "x") == pair


def test_key_file_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    zap.write_key_file(path, zap.new_keypair())
    with pytest.raises(FileExistsError):
        zap.write_key_file(path, zap.new_keypair())


def test_load_or_create_makes_then_keeps_the_hub_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / zap.HUB_KEY_FILE
    first = zap.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert zap.load_or_create(path) == first


def _pair_text(public: str, secret: str) -> str:
    return f"public: {public}\nsecret: {secret}\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no 'public:' line"),
        ("public: {pub}\n", "no 'secret:' line"),
        ("secret: {sec}\n", "no 'public:' line"),
        ("public {pub}\nsecret: {sec}\n", "line 1"),
        ("private: {sec}\n", "line 1"),
        ("public: {pub}\npublic: {pub}\nsecret: {sec}\n", "twice"),
        ("public: {pub}\nsecret: short\n", "secret key must be 40"),
        ("public: {other}\nsecret: {sec}\n", "does not belong"),
    ],
)
def test_malformed_key_files(tmp_path: Path, text: str, needle: str) -> None:
    pub, sec = (k.decode() for k in zmq.curve_keypair())
    other = zmq.curve_keypair()[0].decode()
    body = text.format(pub=pub, sec=sec, other=other)
    with pytest.raises(curvekeys.KeyFileError, match=needle) as err:
        curvekeys.parse_key_file(body, "the.key")
    assert "the.key" in str(err.value)


def test_comments_and_blank_lines_ignored() -> None:
    pub, sec = (k.decode() for k in zmq.curve_keypair())
    text = f"# a comment\n\n  public: {pub}  \n# another\nsecret:{sec}\n"
    assert curvekeys.parse_key_file(text, "x") == curvekeys.KeyPair(pub, sec)


# -- edged refuses to start without usable keys ---------------------------------------


def _edge_config(tmp_path: Path, **keys: object) -> Path:
    lines = ["site: edge-a", f"state_dir: {tmp_path / 'state'}"]
    lines += [f"{k}: '{v}'" for k, v in keys.items()]  # Z85 needs quoting in YAML
    path = tmp_path / "edge.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _key_file(
    tmp_path: Path, text: str | None = None, mode: int = 0o600, name: str = "site.key"
) -> Path:
    path = tmp_path / name
    if text is None:
        pair = zap.new_keypair()
        text = _pair_text(pair.public, pair.secret)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # test only: umask may have narrowed it
    return path


CENTRAL_KEY = zmq.curve_keypair()[0].decode()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("no_server_key", "'central_public_key' is required"),
        ("bad_server_key", "'central_public_key' must be 40"),
        ("no_key_file_key", "'curve_secret_key_file' is required"),
        ("missing_file", "cannot read"),
        ("malformed_file", "no 'secret:' line"),
        ("open_file", "chmod 600"),
    ],
)
def test_edged_refuses_to_start_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, needle: str
) -> None:
    good = _key_file(tmp_path)
    keys: dict[str, object] = {"central_public_key": CENTRAL_KEY, "curve_secret_key_file": good}
    if case == "no_server_key":
        del keys["central_public_key"]
    elif case == "bad_server_key":
        keys["central_public_key"] = "not-a-key"
    elif case == "no_key_file_key":
        del keys["curve_secret_key_file"]
    elif case == "missing_file":
        keys["curve_secret_key_file"] = tmp_path / "nope.key"
    elif case == "malformed_file":
        keys["curve_secret_key_file"] = _key_file(
            tmp_path, f"public: {CENTRAL_KEY}\n", name="bad.key"
        )
    elif case == "open_file":
        keys["curve_secret_key_file"] = _key_file(tmp_path, mode=0o644, name="open.key")
    path = _edge_config(tmp_path, **keys)
    assert edged_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert str(path) in err
    if case in ("missing_file", "malformed_file", "open_file"):
        assert str(keys["curve_secret_key_file"]) in err
        assert "'curve_secret_key_file'" in err


def test_load_curve_keys_ok(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    pair = zap.read_key_file(path)
    cfg = EdgeConfig(site="a", curve_secret_key_file=path, central_public_key=CENTRAL_KEY)
    keys = link.load_curve_keys(cfg)
    assert (keys.public, keys.secret, keys.server) == (pair.public, pair.secret, CENTRAL_KEY)
    with pytest.raises(ConfigError):
        link.load_curve_keys(EdgeConfig(site="a"))


# -- the hub: ZAP, key-bound identity, revocation --------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.config = CentralConfig(
            state_dir=tmp_path, hub_endpoint=f"tcp://127.0.0.1:{_free_port()}"
        )
        self.store = Store(tmp_path / "central.db")
        self.ctx = zmq.asyncio.Context()
        self.hub = Hub(self.config, self.store, self.ctx)
        self.events: list[tuple[str, str, str]] = []
        self.hub.on_security_event = lambda *event: self.events.append(event)
        self.client_ctx = zmq.asyncio.Context()

    def add_site(self, name: str, key: str | None) -> None:
        with self.store.transaction():
            self.store.db["sites"].insert({"name": name, "created_at": now(), "public_key": key})

    def dealer(self, routing_id: str, pair: zap.KeyPair | None) -> zmq.asyncio.Socket:
        sock = self.client_ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
        if pair is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.hub.keypair.public.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret.encode())
        sock.connect(self.config.hub_endpoint)
        return sock

    async def close(self) -> None:
        await self.hub.stop()
        self.client_ctx.destroy(linger=0)
        self.ctx.destroy(linger=0)
        self.store.close()


async def _until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path)
    yield r
    await r.close()


async def test_hub_key_pair_made_once_and_shown(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / zap.HUB_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert zap.read_key_file(path) == rig.hub.keypair
    assert rig.hub.stats()["public_key"] == rig.hub.keypair.public


async def test_enrolled_key_speaks_unenrolled_refused(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    a, stranger = zap.new_keypair(), zap.new_keypair()
    rig.add_site("site-a", a.public)
    await rig.hub.start()
    good = rig.dealer("site-a", a)
    bad = rig.dealer("site-a", stranger)
    plain = rig.dealer("site-a", None)  # no CURVE at all: the handshake fails
    with caplog.at_level(logging.WARNING, logger="central.zap"):
        for sock, enc in ((bad, wire.Encoder("site-a")), (plain, wire.Encoder("site-a"))):
            await sock.send_multipart(enc.encode(wire.HEARTBEAT, generation=0), zmq.NOBLOCK)
        await good.send_multipart(wire.Encoder("site-a").encode(wire.HELLO, last_generation=0))
        await _until(lambda: rig.hub.counters["received_hello"] == 1)
        await _until(lambda: rig.hub.refused["unenrolled_key"] >= 1)
    assert rig.hub.peers["site-a"].up
    assert rig.hub.counters["received_heartbeat"] == 0
    assert rig.hub.stats()["refused_total"] >= 1
    refusals = [r for r in caplog.records if "not enrolled" in r.getMessage()]
    assert refusals and refusals[0].levelno == logging.WARNING
    assert stranger.public[:8] in refusals[0].getMessage()
    assert stranger.public not in refusals[0].getMessage()  # fingerprint only


async def test_key_bound_to_its_site(rig: Rig) -> None:
    a, b = zap.new_keypair(), zap.new_keypair()
    rig.add_site("site-a", a.public)
    rig.add_site("site-b", b.public)
    await rig.hub.start()
    # A's key with B's routing id, then with A's routing id but B in the body.
    as_b = rig.dealer("site-b", a)
    await as_b.send_multipart(wire.Encoder("site-b").encode(wire.ACK, generation=9))
    body_b = rig.dealer("site-a", a)
    await body_b.send_multipart(wire.Encoder("site-b").encode(wire.ACK, generation=9))
    await _until(lambda: rig.hub.drops["wrong_site"] == 2)
    assert rig.hub.peers["site-b"].acked_generation == 0
    assert not rig.hub.peers["site-b"].up
    # Two sockets: their messages may arrive in either order.
    assert sorted((kind, site) for kind, site, _ in rig.events) == [
        ("wrong_site", "site-a"),
        ("wrong_site", "site-b"),
    ]
    assert all("site-a" in detail for _, _, detail in rig.events)


async def test_revoke_cuts_off_and_reenroll_restores(rig: Rig) -> None:
    a = zap.new_keypair()
    rig.add_site("site-a", a.public)
    await rig.hub.start()
    sock = rig.dealer("site-a", a)
    enc = wire.Encoder("site-a")
    await sock.send_multipart(enc.encode(wire.HEARTBEAT, generation=0))
    await _until(lambda: rig.hub.counters["received_heartbeat"] == 1)
    assert rig.hub.counters["sent_heartbeat"] == 1
    rig.hub.revoke("site-a")
    rig.hub.published("site-a", 5, {"site": "site-a"})  # nothing may reach a revoked site
    await sock.send_multipart(enc.encode(wire.HEARTBEAT, generation=0))
    await _until(lambda: rig.hub.drops["revoked_key"] == 1)
    assert rig.hub.counters["sent_heartbeat"] == 1
    assert rig.hub.counters["sent_desired"] == 0
    assert rig.events[-1][:2] == ("revoked_key", "site-a")
    # A new key pair for the site: the new connection speaks, the old one stays cut off.
    new = zap.new_keypair()
    rig.hub.enroll("site-a", new.public)
    fresh = rig.dealer("site-a", new)
    await fresh.send_multipart(wire.Encoder("site-a").encode(wire.HEARTBEAT, generation=0))
    await _until(lambda: rig.hub.counters["received_heartbeat"] == 2)
    assert await fresh.poll(2000)


async def test_enroll_rotation_frees_the_old_key(rig: Rig) -> None:
    old, new = zap.new_keypair(), zap.new_keypair()
    rig.hub.enroll("site-a", old.public)
    rig.hub.enroll("site-a", new.public)
    assert rig.hub.key_sites == {new.public: "site-a"}
    rig.hub.revoke("site-a")
    assert rig.hub.key_sites == {} and rig.hub.site_keys == {}

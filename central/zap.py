"""CURVE on the control channel: key files, Z85 keys, and the ZAP handler of the hub.

Every site is enrolled by registering its CURVE public key at central; the
hub's ROUTER is a CURVE server and a ZAP handler on the *same* ZeroMQ context
admits exactly the enrolled keys (a handler on another context is never asked,
and libzmq then lets any key in). The ZAP user id of an admitted peer is its
Z85 public key, so every message the hub receives says which key sent it.

A key file (central's ``hub_curve.key``, a site's ``curve_secret_key_file``)
is text, mode 0600, two lines::

    public: <40 Z85 characters>
    secret: <40 Z85 characters>

Lines starting with ``#`` and blank lines are ignored. edged reads the same
format (``edged/link.py``; edged does not import central).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import zmq
import zmq.asyncio
from pydantic import AfterValidator, Field
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)

KEY_CHARS = 40  # Z85 of a 32-byte CURVE key
HUB_KEY_FILE = "hub_curve.key"
ZAP_DOMAIN = "skerry"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str


def z85_key_problem(text: object) -> str | None:
    """Why ``text`` is not a Z85-encoded 32-byte CURVE key, or None if it is one."""
    if not isinstance(text, str):
        return "must be a string"
    if len(text) != KEY_CHARS:
        return f"must be {KEY_CHARS} Z85 characters, got {len(text)}"
    try:
        raw = z85.decode(text.encode("ascii"))
    except Exception:  # bad alphabet (KeyError), a group over 2**32 (struct.error), ...
        return "is not valid Z85"
    if len(raw) != 32:
        return "does not decode to 32 bytes"
    return None


def fingerprint(key: str | bytes | None) -> str:
    """A short, loggable name for a public key (its first 8 Z85 characters)."""
    if key is None:
        return "-"
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    return text[:8]


def parse_key_file(text: str, where: str) -> KeyPair:
    """The key pair in a key file's ``text``; KeyFileError names ``where`` and the problem."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or name not in ("public", "secret"):
            raise KeyFileError(f"{where}: line {number}: expected 'public: <z85>' or 'secret: …'")
        if name in values:
            raise KeyFileError(f"{where}: line {number}: {name!r} given twice")
        problem = z85_key_problem(value)
        if problem:
            raise KeyFileError(f"{where}: line {number}: the {name} key {problem}")
        values[name] = value
    for name in ("public", "secret"):
        if name not in values:
            raise KeyFileError(f"{where}: no '{name}:' line")
    derived = zmq.curve_public(values["secret"].encode()).decode()
    if derived != values["public"]:
        raise KeyFileError(f"{where}: the public key does not belong to the secret key")
    return KeyPair(values["public"], values["secret"])


def read_key_file(path: Path) -> KeyPair:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a text key file") from None
    return parse_key_file(text, str(path))


def key_file_text(pair: KeyPair) -> str:
    return (
        "# Skerry CURVE key pair (Z85). Keep this file secret (mode 0600).\n"
        f"public: {pair.public}\nsecret: {pair.secret}\n"
    )


def new_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def write_key_file(path: Path, pair: KeyPair) -> None:
    """Write a new key file, created 0600 (never chmod-ed after); refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_file_text(pair))
        f.flush()
        os.fsync(f.fileno())


def load_or_create(path: Path) -> KeyPair:
    """central's server key pair: read it, or generate and store it on first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pair = new_keypair()
        try:
            write_key_file(path, pair)
            log.info("generated the hub's CURVE key pair in %s", path)
            return pair
        except FileExistsError:
            pass  # another process won the race: use its key
    return read_key_file(path)


class SiteKeyAuthenticator(AsyncioAuthenticator):
    """ZAP handler: admits exactly the CURVE public keys in ``enrolled`` (key -> site).

    ``enrolled`` is the hub's in-memory map, so a handshake costs a dict look-up,
    never a database query. Every refusal is counted in ``refused`` and logged
    at WARNING with the key's fingerprint (at most once per ``LOG_EVERY_S`` per
    key, with the number of refusals since, so a peer retrying in a loop cannot
    flood the log).
    """

    LOG_EVERY_S = 10.0

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        enrolled: dict[str, str],
        refused: Counter[str],
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(ctx, log=logging.getLogger("central.zap.auth"))
        self.enrolled = enrolled
        self.refused = refused
        self.on_refused = on_refused
        self._logged: dict[str, tuple[float, int]] = {}
        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: ``key`` is the client's Z85 public key."""
        text = key.decode("ascii", "replace")
        if text in self.enrolled:
            return True
        self.refused["unenrolled_key"] += 1
        self._log_refusal(text)
        if self.on_refused is not None:
            self.on_refused("unenrolled_key", text)
        return False

    def _log_refusal(self, key: str) -> None:
        now = time.monotonic()
        last, suppressed = self._logged.get(key, (-1e9, 0))
        if now - last < self.LOG_EVERY_S:
            self._logged[key] = (last, suppressed + 1)
            return
        if len(self._logged) > 10_000:  # bound the memory a key-spraying peer can cost
            self._logged.clear()
        self._logged[key] = (now, 0)
        more = f" ({suppressed} more refusals since the last line)" if suppressed else ""
        log.warning("CURVE handshake refused: key %s is not enrolled%s", fingerprint(key), more)

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The ZAP User-Id of an admitted peer: its Z85 public key (read per message)."""
        return z85.encode(client_public_key).decode("ascii")


def _check_public_key(value: str) -> str:
    problem = z85_key_problem(value)
    if problem:
        raise ValueError(f"a CURVE public key {problem}")
    return value


# A request field holding a site's CURVE public key (pydantic: a 400 naming the field).
PublicKey = Annotated[
    str,
    Field(
        min_length=KEY_CHARS,
        max_length=KEY_CHARS,
        description="CURVE public key, 40 Z85 characters (decodes to 32 bytes).",
    ),
    AfterValidator(_check_public_key),
]

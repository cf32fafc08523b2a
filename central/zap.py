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

The format lives in ``edged/curvekeys.py`` (the channel contract both daemons use).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import zmq
import zmq.asyncio
from pydantic import AfterValidator, Field
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from edged.curvekeys import (  # noqa: F401 - re-exported for central's callers
    KEY_CHARS,
    KeyFileError,
    KeyPair,
    fingerprint,
    key_file_text,
    new_keypair,
    parse_key_file,
    read_key_file,
    write_key_file,
    z85_key_problem,
)

log = logging.getLogger(__name__)

HUB_KEY_FILE = "hub_curve.key"
ZAP_DOMAIN = "skerry"


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

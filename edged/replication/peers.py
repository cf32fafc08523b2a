"""Who may replicate into a site: the ZAP handler of a site's receiver.

A site's receiver (``replication_bind``) admits exactly the CURVE keys of the
peers central named in the site's desired document (``replication_peers``);
the map is replaced whenever a new document is accepted. The ZAP user id of
an admitted peer is its Z85 public key, which :meth:`PeerKeys.site_of` turns
back into the peer's site id.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from edged.curvekeys import fingerprint, z85_key_problem
from edged.replication.sender import Target

log = logging.getLogger(__name__)

ZAP_DOMAIN = "skerry"


def parse_peers(section: Any) -> tuple[list[Target], list[str]]:
    """The valid entries of a document's ``replication_peers`` and a problem per bad one."""
    targets: list[Target] = []
    problems: list[str] = []
    for i, entry in enumerate(section if isinstance(section, list) else []):
        if not isinstance(entry, dict):
            problems.append(f"replication_peers[{i}]: not an object")
            continue
        site, endpoint, key = entry.get("site"), entry.get("endpoint"), entry.get("public_key")
        if not isinstance(site, str) or not site:
            problems.append(f"replication_peers[{i}].site: must be a site id")
        elif not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
            problems.append(f"replication_peers[{i}].endpoint: must be tcp://host:port")
        elif z85_key_problem(key):
            problems.append(f"replication_peers[{i}].public_key: {z85_key_problem(key)}")
        else:
            targets.append(Target(site, endpoint, key))
    return targets, problems


class PeerKeys(AsyncioAuthenticator):
    """ZAP handler admitting the keys in ``keys`` (public key -> site)."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        super().__init__(ctx, log=logging.getLogger("edged.replication.zap"))
        self.keys: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def admit(self, keys: dict[str, str]) -> None:
        self.keys = dict(keys)

    def site_of(self, key: str) -> str | None:
        return self.keys.get(key)

    def callback(self, domain: str, key: bytes) -> bool:
        text = key.decode("ascii", "replace")
        if text in self.keys:
            return True
        self.refused["unknown_peer_key"] += 1
        log.debug("replication handshake refused: key %s", fingerprint(text))
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return z85.encode(client_public_key).decode("ascii")

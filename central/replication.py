"""central's replication receiver: sites push their buckets' objects here.

A :class:`edged.replication.receiver.Receiver` bound at ``replication_endpoint``
on the hub's ZeroMQ context, so the hub's ZAP handler (enrolled site keys,
server key = the hub's key pair) authenticates every sender; the ZAP user id
is mapped back to the site through the hub's enrolment map. A site may only
write into buckets whose policy lists it and replicates to central. Every
``scrub_interval_s`` central re-hashes its objects; central's corrupt copies
are repaired when the site offers that version again (see docs/objects.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import zmq

from central.config import CentralConfig
from central.hub import Hub
from central.store import Store
from edged.replication.receiver import Receiver
from edged.replication.repair import Repairer

log = logging.getLogger(__name__)


def may_replicate(store: Store, site: str, bucket: str) -> bool:
    row = store.one("SELECT sites, replicate_to_central FROM buckets WHERE name = ?", (bucket,))
    return bool(row and row["replicate_to_central"] and site in json.loads(row["sites"]))


class CentralReplication:
    def __init__(self, config: CentralConfig, store: Store, hub: Hub, objects: Any) -> None:
        self.config = config
        self.receiver = Receiver(
            objects,
            config.state_dir / "replication-staging",
            peer_site=hub.key_sites.get,
            authorize=lambda site, bucket: may_replicate(store, site, bucket),
            name="central",
        )
        self.hub = hub
        self.repairer = Repairer(
            "central",
            objects,
            lambda _bucket: [],
            config.state_dir,
            config.scrub_interval_s,
        )
        self._scrub: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """After the hub started (its ZAP handler must be running on the context)."""
        try:
            self.receiver.bind(
                self.hub.ctx, self.config.replication_endpoint, self.hub.keypair.secret
            )
        except zmq.ZMQError as exc:  # the API and the hub serve on without replication
            log.error(
                "replication receiver not bound on %s: %s", self.config.replication_endpoint, exc
            )
        else:
            self.receiver.start()
        self._scrub = asyncio.create_task(self.repairer.run(), name="central-scrub")

    async def stop(self) -> None:
        if self._scrub is not None:
            self._scrub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scrub
        await self.receiver.stop()

    def stats(self) -> dict[str, Any]:
        return {"receiver": self.receiver.stats(), "scrub": self.repairer.stats()}

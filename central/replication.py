"""central's replication receiver: sites push their buckets' objects here.

A :class:`edged.replication.receiver.Receiver` bound at ``replication_endpoint``
on the hub's ZeroMQ context, so the hub's ZAP handler (enrolled site keys,
server key = the hub's key pair) authenticates every sender; the ZAP user id
is mapped back to the site through the hub's enrolment map. A site may only
write into buckets whose policy lists it and replicates to central. Every
``scrub_interval_s`` central re-hashes its objects; a corrupt copy (found by
the scrub or by a GET) is fetched back from a site the bucket's policy lists,
through that site's own sender link to this receiver
(``edged/replication/reverse_fetch.py``), and repaired; with no such site
connected the repairer tries again later (see docs/objects.md).
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
from edged.replication.reverse_fetch import RouterChannel, SiteLinks

log = logging.getLogger(__name__)


def may_replicate(store: Store, site: str, bucket: str) -> bool:
    row = store.one("SELECT sites, replicate_to_central FROM buckets WHERE name = ?", (bucket,))
    return bool(row and row["replicate_to_central"] and site in json.loads(row["sites"]))


def replicating_sites(store: Store, bucket: str) -> list[str]:
    """The sites whose copies of ``bucket`` replicate to central (its policy lists them)."""
    row = store.one("SELECT sites, replicate_to_central FROM buckets WHERE name = ?", (bucket,))
    return list(json.loads(row["sites"])) if row and row["replicate_to_central"] else []


class CentralReplication:
    def __init__(self, config: CentralConfig, store: Store, hub: Hub, objects: Any) -> None:
        self.config = config
        self.store = store
        self.links = SiteLinks(lambda: self.receiver.sock, on_site=self._site_connected)
        self.receiver = Receiver(
            objects,
            config.state_dir / "replication-staging",
            peer_site=hub.key_sites.get,
            authorize=lambda site, bucket: may_replicate(store, site, bucket),
            name="central",
            intercept=self.links.intercept,
        )
        self.hub = hub
        self.repairer = Repairer(
            "central",
            objects,
            self.sources,
            config.state_dir,
            config.scrub_interval_s,
        )
        self._scrub: asyncio.Task[None] | None = None

    def sources(self, bucket: str) -> list[RouterChannel]:
        """Links to the connected sites holding ``bucket`` (per its policy), newest first."""
        return self.links.channels(replicating_sites(self.store, bucket))

    def on_corrupt(self, bucket: str, key: str) -> None:
        """A read found ``bucket/key`` corrupt: repair it now, not at the next scrub."""
        self.repairer.suspect(bucket, key)

    def _site_connected(self, site: str) -> None:
        if self.repairer.unrepaired:  # it may hold what could not be repaired so far
            self.repairer.wake.set()

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
        return {
            "receiver": self.receiver.stats(),
            "scrub": self.repairer.stats(),
            "site_links": self.links.stats(),
        }

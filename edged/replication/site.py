"""A site's replication: senders to central and peers, a receiver for peers, scrub and repair.

Built from the held desired document: every bucket in ``buckets`` with
``replicate_to_central`` streams to central (``central_replication_endpoint``,
central's hub key); every bucket naming ``peers`` streams to each peer that
``replication_peers`` describes (``{site, endpoint, public_key}``). One
:class:`~edged.replication.sender.Sender` per target, started and stopped as
documents change. When ``replication_bind`` is set, a receiver takes the
replicas of the peers the document names (its ZAP handler admits exactly
their keys). The repairer fetches corrupt objects from the targets of their
bucket. :meth:`SiteReplication.status` is the per-bucket, per-target lag the
local API and the site's status report show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from edged.replication.cursors import CursorStore
from edged.replication.peers import PeerKeys, parse_peers
from edged.replication.receiver import Receiver
from edged.replication.repair import Repairer
from edged.replication.reverse_fetch import FetchAnswers
from edged.replication.sender import Channel, Sender, Settings, Target
from edged.replication.store_api import ReplicaStore

log = logging.getLogger(__name__)

CENTRAL = "central"


def plan_targets(
    document: dict[str, Any], central: Target
) -> tuple[dict[str, Target], dict[str, list[str]], list[str]]:
    """Targets by name, the buckets each target gets, and problems with the document."""
    peers, problems = parse_peers(document.get("replication_peers"))
    known = {t.name: t for t in peers}
    targets: dict[str, Target] = {}
    buckets: dict[str, list[str]] = {}
    for entry in document.get("buckets") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        if entry.get("replicate_to_central"):
            targets[CENTRAL] = central
            buckets.setdefault(CENTRAL, []).append(name)
        for peer in entry.get("peers") or []:
            if peer not in known:
                problems.append(f"bucket {name}: peer {peer!r} has no replication_peers entry")
                continue
            targets[peer] = known[peer]
            buckets.setdefault(peer, []).append(name)
    return targets, buckets, problems


class SiteReplication:
    def __init__(
        self,
        site: str,
        store: ReplicaStore,
        ctx: zmq.asyncio.Context,
        state_dir: Path,
        keys: tuple[str, str],  # this site's CURVE public, secret
        central: Target,
        settings: Settings,
        bind: str = "",
        scrub_interval_s: float = 3600.0,
    ) -> None:
        self.site = site
        self.store = store
        self.ctx = ctx
        self.keys = keys
        self.central = central
        self.settings = settings
        self.bind = bind
        self.staging = state_dir / "replication-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.cursors = CursorStore(state_dir / "replication.db")
        self.senders: dict[str, Sender] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.bucket_targets: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.unplaced: dict[str, list[str]] = {}  # bucket -> peers without an entry
        self.counters: Counter[str] = Counter()
        self.zap: PeerKeys | None = None
        self.receiver: Receiver | None = None
        self.repairer = Repairer(
            site, store, self._sources, self.staging, scrub_interval_s, timeout_s=15.0
        )
        self._repair_task: asyncio.Task[None] | None = None

    def _sources(self, bucket: str) -> list[Channel]:
        return [
            self.senders[t].channel
            for t in self.bucket_targets.get(bucket, [])
            if t in self.senders and self.senders[t].channel.sock is not None
        ]

    def start(self, document: dict[str, Any]) -> None:
        if self.bind:
            self.zap = PeerKeys(self.ctx)
            self.zap.start()
            receiver = Receiver(self.store, self.staging, self.zap.site_of, name="peers")
            try:
                receiver.bind(self.ctx, self.bind, self.keys[1])
            except zmq.ZMQError as exc:  # the senders and the repairer run on without it
                self.counters["receiver_bind_failures"] += 1
                log.error("replication receiver not bound on %s: %s", self.bind, exc)
            else:
                self.receiver = receiver
                receiver.start()
        self._repair_task = asyncio.create_task(self.repairer.run(), name="scrub-repair")
        self.update(document)

    def update(self, document: dict[str, Any]) -> None:
        """Follow a newly held document: start, re-point or stop senders."""
        targets, buckets, self.problems = plan_targets(document or {}, self.central)
        self.unplaced = {
            entry["name"]: [p for p in entry.get("peers") or [] if p not in targets]
            for entry in (document or {}).get("buckets") or []
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)
        }
        for problem in self.problems:
            log.warning("replication: %s", problem)
        by_bucket: dict[str, list[str]] = {}
        for target, names in buckets.items():
            for name in names:
                by_bucket.setdefault(name, []).append(target)
        self.bucket_targets = by_bucket
        for name in list(self.senders):
            if name not in targets or self.senders[name].channel.target != targets[name]:
                self.tasks.pop(name).cancel()
                del self.senders[name]
        for name, target in targets.items():
            if name in self.senders:
                continue
            channel = Channel(self.ctx, self.site, self.keys[0], self.keys[1], target)
            if name == "central":  # central repairs its copies from ours over this link
                channel.on_request = FetchAnswers(
                    channel, self.store, lambda n=name: self._buckets_of(n)
                )
            sender = Sender(
                self.site,
                self.store,
                self.cursors,
                channel,
                buckets=lambda n=name: self._buckets_of(n),
                settings=self.settings,
                on_suspect=self.repairer.suspect,
            )
            self.senders[name] = sender
            self.tasks[name] = asyncio.create_task(
                self._supervise(sender), name=f"replicate-{name}"
            )
        if self.zap is not None:
            peers, _ = parse_peers(document.get("replication_peers"))
            self.zap.admit({t.public_key: t.name for t in peers})

    async def _supervise(self, sender: Sender) -> None:
        """Run ``sender``; an unexpected failure (a store error, say) is logged, counted,
        shown as the streams' last error, and the sender restarted after a backoff."""
        delay = self.settings.backoff_initial_s
        while True:
            try:
                await sender.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["sender_failures"] += 1
                log.exception("replication to %s failed; restarting it", sender.target)
                for bucket in self._buckets_of(sender.target):
                    stream = sender.stream(bucket)
                    stream.last_error, stream.last_error_at = f"internal: {exc}", time.time()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.settings.backoff_max_s)

    def _buckets_of(self, target: str) -> list[str]:
        return [b for b, targets in self.bucket_targets.items() if target in targets]

    def status(self) -> dict[str, Any]:
        """Per bucket, per target: pending changes, lag seconds, last success and error."""
        view: dict[str, dict[str, Any]] = {}
        for bucket, targets in self.bucket_targets.items():
            for target in targets:
                sender = self.senders.get(target)
                if sender is not None:
                    view.setdefault(bucket, {})[target] = sender.stream(bucket).view()
        for bucket, peers in self.unplaced.items():
            for peer in peers:  # central has not told this site where the peer is
                view.setdefault(bucket, {})[peer] = {
                    "pending": None,
                    "pending_more": False,
                    "lag_seconds": None,
                    "last_success": None,
                    "last_error": f"no replication_peers entry for {peer} "
                    "(central knows no endpoint or key for it yet)",
                    "last_error_at": None,
                    "sent": 0,
                }
        return view

    def stats(self) -> dict[str, Any]:
        return {
            "buckets": self.status(),
            "targets": {
                name: {"messages": dict(s.channel.counters), "dropped": dict(s.channel.drops)}
                for name, s in self.senders.items()
            },
            "receiver": self.receiver.stats() if self.receiver else None,
            "scrub": self.repairer.stats(),
            "problems": self.problems,
            **dict(self.counters),
        }

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        if self._repair_task is not None:
            tasks.append(self._repair_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.receiver is not None:
            await self.receiver.stop()
        if self.zap is not None:
            self.zap.stop()
        self.cursors.close()

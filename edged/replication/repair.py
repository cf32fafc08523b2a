"""Scrub and repair: find corrupt objects and replace their bytes with a replica's.

Every ``interval_s`` the :class:`Repairer` re-hashes up to ``batch`` stored
objects (``store.scrub``, least recently scrubbed first); objects a read
found corrupt are marked by the store itself. Each version in
``store.corrupt()`` is then fetched from the replicas ``sources(bucket)``
names (central, peers) and handed to ``store.repair``, which checks the bytes
against the etag before replacing anything. A sender that saw its source
refused as corrupt (``suspect``) wakes the repairer, which reads that object
through ``store.get`` so the store marks it. While some corrupt version is
left unrepaired (no replica reachable, none with a good copy) the pass is
retried every ``retry_s`` besides the scrubs; ``wake`` starts one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.replication.sender import Channel, TransferError, fetch
from edged.replication.store_api import ReplicaStore

log = logging.getLogger(__name__)


class Repairer:
    def __init__(
        self,
        site: str,
        store: ReplicaStore,
        sources: Callable[[str], list[Channel]],
        staging_dir: Path,
        interval_s: float,
        batch: int | None = 1000,
        timeout_s: float = 15.0,
        retry_s: float = 30.0,
    ) -> None:
        self.site = site
        self.store = store
        self.sources = sources
        self.staging_dir = staging_dir
        self.interval_s = interval_s
        self.batch = batch
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.suspects: set[tuple[str, str]] = set()
        self.wake = asyncio.Event()
        self.counters: Counter[str] = Counter()
        self.last_scrub: float | None = None
        self.unrepaired: list[dict[str, str]] = []

    def suspect(self, bucket: str, key: str) -> None:
        self.suspects.add((bucket, key))
        self.wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            **dict(self.counters),
            "last_scrub": self.last_scrub,
            "corrupt_unrepaired": self.unrepaired,
        }

    async def run(self) -> None:
        next_scrub = time.monotonic() + self.interval_s if self.interval_s > 0 else float("inf")
        while True:
            timeout = max(0.0, next_scrub - time.monotonic())
            if self.unrepaired:  # try again before the next scrub
                timeout = min(timeout, self.retry_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(timeout, 3600.0))
            self.wake.clear()
            scrub = time.monotonic() >= next_scrub
            try:
                await self.pass_once(scrub=scrub)
            except Exception:  # a store or link problem must not end scrubbing
                self.counters["pass_failures"] += 1
                log.exception("scrub/repair pass failed")
            if scrub:
                next_scrub = time.monotonic() + self.interval_s

    async def pass_once(self, scrub: bool = True) -> int:
        """Scrub (if ``scrub``), check suspects, repair what is corrupt; how many repaired."""
        if scrub:
            found = await asyncio.to_thread(self.store.scrub, self.batch)
            self.counters["scrubs"] += 1
            self.counters["found_corrupt"] += len(found)
            self.last_scrub = time.time()
        suspects, self.suspects = self.suspects, set()
        for bucket, key in suspects:
            await asyncio.to_thread(self._check, bucket, key)
        repaired = 0
        unrepaired = []
        for v in await asyncio.to_thread(self.store.corrupt):
            why = await self.repair_one(v)
            if why is None:
                repaired += 1
            else:
                unrepaired.append({"bucket": v.bucket, "key": v.key, "hlc": v.hlc, "why": why})
        self.unrepaired = unrepaired
        return repaired

    def _check(self, bucket: str, key: str) -> None:
        """Read the object through the store's verified path: a bad copy gets marked."""
        try:
            _v, chunks = self.store.get(bucket, key)
            for _ in chunks:
                pass
        except Exception as exc:
            log.info("suspect %s/%s: %s", bucket, key, exc)

    async def repair_one(self, v: Any) -> str | None:
        """Repair ``v`` from the first replica with a good copy; None, or why not."""
        sources = self.sources(v.bucket)
        reached = []
        for channel in sources:
            try:
                with tempfile.TemporaryFile(dir=self.staging_dir) as f:
                    got = await fetch(channel, self.site, v.bucket, v.key, f, self.timeout_s)
                    reached.append(channel.target.name)
                    if got is None:
                        self.counters["source_missing"] += 1
                        log.info(
                            "%s has no good copy of %s/%s", channel.target.name, v.bucket, v.key
                        )
                        continue
                    if got.hlc < v.hlc:
                        continue  # the replica is behind ours: no help
                    await asyncio.to_thread(self._repair, v, got, f)
            except TransferError as exc:
                log.info("repair of %s/%s from %s: %s", v.bucket, v.key, channel.target.name, exc)
                if exc.reason != "unreachable":
                    reached.append(channel.target.name)
                continue
            except Exception as exc:
                self.counters["repair_refused"] += 1
                log.warning(
                    "repair of %s/%s from %s refused: %s", v.bucket, v.key, channel.target.name, exc
                )
                continue
            self.counters["repaired"] += 1
            log.info("object %s/%s repaired from %s", v.bucket, v.key, channel.target.name)
            return None
        if not reached:
            self.counters["no_source"] += 1
            why = "no replica holding the bucket is reachable"
        else:
            self.counters["unrepaired"] += 1
            why = f"no good copy from {', '.join(sorted(set(reached)))}"
        log.warning(
            "object %s/%s is corrupt: %s; retrying in %.0fs", v.bucket, v.key, why, self.retry_s
        )
        return why

    def _repair(self, v: Any, got: Any, f: Any) -> None:
        f.seek(0)

        def chunks():  # type: ignore[no-untyped-def]
            while data := f.read(1024 * 1024):
                yield data

        self.store.repair(v.bucket, v.key, got, chunks())

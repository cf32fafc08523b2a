"""Repair in reverse: central fetches a version from a site over the site's own sender link.

A site's sender to central is a DEALER connected to central's receiver ROUTER;
central has no connection of its own to a site's store. So it uses that link
the other way round: it sends ``fetch{site: "central", bucket, key}`` to the
routing id the site's latest message came from, and the site answers from its
store with ``version`` / ``data`` / ``end`` or ``missing`` (or
``nack{reason: "unauthorized"}``), exactly as its peer receivers answer a
``fetch`` (:func:`edged.replication.receiver.serve_fetch`).

* Site end: :class:`FetchAnswers`, called by a sender's
  :class:`~edged.replication.sender.Channel` for an unsolicited ``fetch``. It
  answers only the target at the other end of the link (``site`` must name
  it) and only for a bucket the site replicates to that target.
* Target end: :class:`SiteLinks`, hooked into the receiver (``intercept``): it
  learns each site's latest routing id and hands fetch replies to the waiting
  fetch; :class:`RouterChannel` is what :func:`edged.replication.sender.fetch`
  and the :class:`~edged.replication.repair.Repairer` need from a channel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import zmq
import zmq.asyncio

from edged.replication import protocol as p
from edged.replication.receiver import serve_fetch
from edged.replication.sender import Target, TransferError
from edged.replication.store_api import ReplicaStore

log = logging.getLogger(__name__)

REPLIES = frozenset({p.VERSION, p.DATA, p.END, p.MISSING, p.NACK})  # answers to a fetch
ANSWERS_AT_ONCE = 4  # fetches a site answers concurrently on one link; more wait
STALL_S = 15.0  # a fetch reply nobody takes within this long is dropped


# -- site end ------------------------------------------------------------------------------


class FetchAnswers:
    """Answers the ``fetch`` requests a target sends down a sender's link."""

    def __init__(
        self,
        channel: Any,
        store: ReplicaStore,
        buckets: Callable[[], list[str]],
        timeout_s: float = 15.0,
    ) -> None:
        self.channel = channel
        self.store = store
        self.buckets = buckets
        self.timeout_s = timeout_s
        self.gate = asyncio.Semaphore(ANSWERS_AT_ONCE)
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, msg: p.Msg) -> None:
        task = asyncio.create_task(self.answer(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, msg: p.Msg) -> None:
        counters = self.channel.counters
        try:
            async with self.gate:
                await self._answer(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the link went, or the store failed: the target retries
            counters["fetch_answer_failed"] += 1
            log.info("fetch from %s for %s: %s", self.channel.target.name, msg["key"], exc)

    async def _answer(self, msg: p.Msg) -> None:
        channel = self.channel

        async def send(kind: str, data: Any = None, **fields: Any) -> None:
            if channel.sock is None:
                raise TransferError("closed", "the link was closed")
            await channel.send(p.encode(kind, msg.id, data, **fields), self.timeout_s)

        if msg["site"] != channel.target.name or msg["bucket"] not in self.buckets():
            channel.counters["fetch_refused"] += 1
            await send(p.NACK, reason="unauthorized")
            return
        channel.counters["fetch_answered"] += 1
        await serve_fetch(self.store, msg["bucket"], msg["key"], send)


# -- target end ----------------------------------------------------------------------------


class SiteLinks:
    """The sites connected to a receiver (their latest routing ids) and fetches through them."""

    def __init__(
        self,
        sock: Callable[[], zmq.asyncio.Socket | None],
        on_site: Callable[[str], None] = lambda _site: None,
    ) -> None:
        self.sock = sock
        self.on_site = on_site  # a site connected (or reconnected under a new routing id)
        self.routes: dict[str, tuple[bytes, float]] = {}
        self.waiting: dict[tuple[bytes, int], asyncio.Queue[p.Msg]] = {}
        self.tids = itertools.count(time.time_ns() // 1000)
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    async def intercept(self, routing: bytes, site: str, msg: p.Msg) -> bool:
        """The receiver's hook for every authenticated, valid message: whether it was ours."""
        seen = self.routes.get(site)
        self.routes[site] = (routing, time.monotonic())
        if seen is None or seen[0] != routing:
            self.on_site(site)
        if msg.type not in REPLIES:
            return False
        queue = self.waiting.get((routing, msg.id))
        if queue is None:
            self.drops["unknown_transfer"] += 1
            return True
        try:
            await asyncio.wait_for(queue.put(msg), STALL_S)  # back-pressure, bounded
        except TimeoutError:
            self.drops["stalled"] += 1
        return True

    def forget(self, site: str, routing: bytes) -> None:
        if self.routes.get(site, (None,))[0] == routing:
            del self.routes[site]

    def channels(self, sites: Iterable[str]) -> list[RouterChannel]:
        """A channel to each of ``sites`` that is connected, the most recently heard first."""
        live = [(self.routes[s][1], s) for s in set(sites) if s in self.routes]
        return [RouterChannel(self, s, self.routes[s][0]) for _t, s in sorted(live, reverse=True)]

    def stats(self) -> dict[str, Any]:
        return {
            "connected": sorted(self.routes),
            "messages": dict(self.counters),
            "dropped": dict(self.drops),
        }


class RouterChannel:
    """A fetch to one site through the receiver's ROUTER (the site's sender link)."""

    def __init__(self, links: SiteLinks, site: str, routing: bytes) -> None:
        self.links = links
        self.routing = routing
        self.target = Target(site, "", "")
        self.drops = links.drops
        self.counters = links.counters

    @property
    def sock(self) -> zmq.asyncio.Socket | None:
        return self.links.sock()

    def open_transfer(self) -> tuple[int, asyncio.Queue[p.Msg]]:
        tid = next(self.links.tids)
        queue: asyncio.Queue[p.Msg] = asyncio.Queue(64)
        self.links.waiting[(self.routing, tid)] = queue
        return tid, queue

    def close_transfer(self, tid: int) -> None:
        self.links.waiting.pop((self.routing, tid), None)

    async def send(self, frames: list[Any], timeout: float) -> None:
        site = self.target.name
        sock = self.sock
        if sock is None:
            raise TransferError("unreachable", "the receiver is not bound")
        try:
            await asyncio.wait_for(sock.send_multipart([self.routing, *frames]), timeout)
        except TimeoutError:
            raise TransferError("timeout", f"{site} takes nothing") from None
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: that connection is gone
            self.links.forget(site, self.routing)
            self.counters["unreachable"] += 1
            raise TransferError("unreachable", f"{site} is not connected ({exc})") from None
        self.counters[f"sent_{bytes(frames[0]).decode()}"] += 1

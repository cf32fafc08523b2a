"""Group commit of received replicas: many prepared versions, one index transaction.

The receiver's sessions write and check each version's blob on their own
(``store.prepare_replica``, in parallel threads); :class:`GroupCommit` then
commits whatever has been prepared meanwhile in one
``store.commit_replicas`` call (one directory fsync per blob directory, one
index transaction and its fsync, instead of both per object). A session is
acknowledged only when the batch holding its version has committed, so an
``ack`` never names a version that a crash could still lose; when the commit
fails, every session of the batch gets the error (and its sender a ``nack``).
No timer: a batch is whatever arrived while the previous one was committing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

MAX_BATCH = 256


class GroupCommit:
    """Commits prepared replicas of ``store`` in batches, off the event loop."""

    def __init__(self, store: Any, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self.pending: list[tuple[Any, asyncio.Future[bool]]] = []
        self.batches = 0
        self.committed = 0
        self._task: asyncio.Task[None] | None = None

    async def commit(self, prepared: Any) -> bool:
        """Whether ``prepared`` changed the store, once its batch is durable."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((prepared, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="replica-group-commit")
        return await future

    async def _drain(self) -> None:
        while self.pending:
            batch = self.pending[: self.max_batch]
            del self.pending[: self.max_batch]
            try:
                changed = await asyncio.to_thread(
                    self.store.commit_replicas, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.committed += len(batch)
            for (_, future), result in zip(batch, changed, strict=True):
                if not future.done():
                    future.set_result(bool(result))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for _, future in self.pending:
            future.cancel()
        self.pending.clear()

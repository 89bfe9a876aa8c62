"""One Redis pub/sub connection fanned out to a process's watchers.

The edge's live job events (``edge/events.py``) and the coordinator's wake-ups
(``coordinator/wake.py``) listen through an :class:`EventHub`: channels are
subscribed while someone watches them. The hub has a client of its own
(``redisconn.connect_pubsub``): on Redis Cluster, one node's, since PUBLISH
reaches every node, and another node's when that one fails. Pub/sub is at
most once: what is published while the hub reconnects is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


class EventHub:
    """Fans one Redis pub/sub connection out to the streams of this node.

    ``redis`` is the hub's own client (``redisconn.connect_pubsub``); ``close`` closes it.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.client = redis
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._watchers: dict[str, set[asyncio.Queue[bytes | str | None]]] = {}
        self._lock = asyncio.Lock()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="event-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for queues in self._watchers.values():
            for q in queues:
                q.put_nowait(None)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
        await self.client.aclose()

    async def _pump(self) -> None:
        while True:
            await self._subscribed.wait()
            try:
                msg = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event subscription failed; resubscribing", exc_info=True)
                await asyncio.sleep(0.5)
                await self._resubscribe()
                continue
            if not msg or msg.get("type") != "message":
                continue
            for q in list(self._watchers.get(msg["channel"], ())):
                try:
                    q.put_nowait(msg["data"])
                except asyncio.QueueFull:  # a client that stopped reading: end its stream
                    q.get_nowait()
                    q.put_nowait(None)

    async def _resubscribe(self) -> None:
        async with self._lock:
            if self._watchers:
                await self.pubsub.subscribe(*self._watchers)

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[asyncio.Queue[bytes | str | None]]:
        queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        async with self._lock:
            if channel not in self._watchers:
                await self.pubsub.subscribe(channel)
                self._watchers[channel] = set()
            self._watchers[channel].add(queue)
            self._subscribed.set()
        try:
            yield queue
        finally:
            async with self._lock:
                watchers = self._watchers.get(channel)
                if watchers is not None:
                    watchers.discard(queue)
                    if not watchers:
                        del self._watchers[channel]
                        with contextlib.suppress(Exception):
                            await self.pubsub.unsubscribe(channel)

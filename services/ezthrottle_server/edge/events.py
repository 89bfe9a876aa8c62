"""Live job events: ``GET /api/v1/jobs/{id}/events`` as server-sent events.

Every state change is published by the Lua script that makes it, on the job's
pub/sub channel (``keys.job_events``), whichever node or region made it; so a
client may connect to any edge. Event types: ``dispatching`` {region},
``attempt`` {region, status_code, latency_ms, error, decision}, ``scheduled``
{region, due_ms, reason}, ``queued`` {region}, ``region_out``, ``won``
{region}, ``completed`` / ``failed`` (with the job view), ``delivered``
{webhook}, ``webhook_dead``, ``quorum_met``.

A stream subscribes first and only then reads the job, and sends that view as
a ``snapshot`` event, so a client that connects late gets the current state
first and misses nothing after it. It ends once the job is final and every
webhook is delivered or dead (at once, for a job already settled), or after
``max_stream_s``. Keep-alive comments go out every ``keepalive_s``.

One pub/sub connection per edge serves every stream (:class:`EventHub`);
channels are subscribed while someone watches them. The hub has a client of
its own (``redisconn.connect_pubsub``): on Redis Cluster, one node's, since
PUBLISH reaches every node, and another node's when that one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from ..common import keys
from ..common.errors import ApiError

log = logging.getLogger(__name__)

FINAL = frozenset({"success", "failed", "cancelled", "expired"})
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


def _settled(view: dict[str, Any]) -> bool:
    """Final, and no webhook is still being delivered."""
    if view["status"] not in FINAL:
        return False
    hooks = view.get("webhooks") or {}
    return all(h.get("state") in ("delivered", "dead") for h in hooks.get("endpoints", []))


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    await resp.write(b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")


async def stream_job_events(
    request: web.Request,
    hub: EventHub,
    load_view: Any,
    *,
    keepalive_s: float = 15.0,
    max_stream_s: float = 3600.0,
) -> web.StreamResponse:
    """Serve one job's events. ``load_view()`` returns the job view or raises 404."""
    job_id = request.match_info["job_id"]
    async with hub.watch(keys.job_events(job_id)) as queue:
        view = await load_view()  # after subscribing: nothing published from here on is missed
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        await resp.prepare(request)
        await _send(resp, "snapshot", view)
        if _settled(view):
            await _send(resp, "completed" if view["status"] == "success" else "failed", view)
            await resp.write_eof()
            return resp
        deadline = time.monotonic() + max_stream_s
        quorum_sent = False
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(min(keepalive_s, max(0.0, deadline - time.monotonic()))):  # not wait_for (edge/app.py)
                    raw = await queue.get()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if raw is None:
                break
            event = orjson.loads(raw)
            kind = event.pop("type", "event")
            if kind in ("completed", "failed", "delivered", "webhook_dead", "quorum_met"):
                view = await load_view()
            if kind in ("completed", "failed"):
                await _send(resp, kind, view)
            else:
                event["job_id"] = job_id
                await _send(resp, kind, event)
                quorum_sent = quorum_sent or kind == "quorum_met"
            if _settled(view):
                hooks = view.get("webhooks") or {}
                if hooks.get("quorum_met") and not quorum_sent:
                    # published in the same script as the last delivery: say it before ending
                    await _send(resp, "quorum_met", {"job_id": job_id, "ts_ms": hooks.get("quorum_met_at_ms")})
                break
        await resp.write_eof()
        return resp


def not_found(job_id: str) -> ApiError:
    return ApiError("not_found", f"no job {job_id!r} for this API key")

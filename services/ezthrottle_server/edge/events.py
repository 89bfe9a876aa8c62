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

One pub/sub connection per edge serves every stream (``common/pubsub.py``
:class:`EventHub`); channels are subscribed while someone watches them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from ..common import keys
from ..common.errors import ApiError
from ..common.pubsub import EventHub

FINAL = frozenset({"success", "failed", "cancelled", "expired"})


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

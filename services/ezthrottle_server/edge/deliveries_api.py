"""Dead-lettered webhooks of the API key's customer: list and replay.

- ``GET /api/v1/deliveries/dead?limit=100`` -> ``{"dead": [{"job_id",
  "dead_at_ms", "job_status", "webhooks": [{"index", "url", "dead_reason",
  "attempts", "last_status_code", "last_error", ...}]}], "count"}``, oldest first.
- ``POST /api/v1/deliveries/dead/{job_id}/replay`` -> ``{"job_id",
  "replayed": n}``: the job's dead webhooks are queued again, each with a
  fresh retry window. 404 for a job of another customer or without
  delivery state; ``replayed`` is 0 when none of its webhooks is dead.
- ``POST /api/v1/deliveries/dead/replay`` with a filter (``job_ids``,
  ``dead_after``, ``dead_before``; common/bulk_replay.py) -> the run:
  ``{"replay_id", "state", "matched", "jobs_done", "webhooks_replayed", ...}``,
  200 and done when at most :data:`INLINE_MAX` jobs match, else 202 and
  running in the background; ``GET /api/v1/deliveries/dead/replay/{replay_id}``
  reads its progress.

A webhook replayed again within the window a replay gave it goes on in that
window; it does not get a new one (``delivery_replay.lua``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ..common import bulk_replay, deliveries
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.metrics import WEBHOOK_REPLAYED
from .context import CTX

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
INLINE_MAX = 100  # a bulk replay of more jobs runs in the background (202)


async def list_dead(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:  # '²'.isdigit() too
        raise ApiError("invalid_field", f"limit: must be an integer from 1 to {MAX_LIMIT}", field="limit")
    dead = await deliveries.list_dead(ctx.redis, ctx.settings.partitions, customer=customer, limit=int(raw))
    for entry in dead:
        entry.pop("customer", None)
    return json_response({"dead": dead, "count": len(dead)})


async def replay_dead(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    job_id = request.match_info["job_id"]
    replayed = await deliveries.replay(
        ctx.redis,
        ctx.scripts,
        job_id,
        ctx.settings.region_ids,
        ctx.settings.job_ttl_s,
        customer=customer,
        window_s=ctx.settings.delivery_window_s,
    )
    if replayed is None:
        raise ApiError("not_found", f"no webhook deliveries for job {job_id!r} for this API key")
    WEBHOOK_REPLAYED.inc(replayed)
    return json_response({"job_id": job_id, "replayed": replayed})


async def replay_many(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    flt = bulk_replay.parse_filter(await read_json(request, ctx.settings.max_body_bytes))
    job_ids = await bulk_replay.matching(ctx.redis, ctx.settings.partitions, customer, flt)
    run_id = await bulk_replay.start(ctx.redis, customer, len(job_ids))
    replay = bulk_replay.run(
        ctx.redis, ctx.scripts, run_id, job_ids, ctx.settings.region_ids, ctx.settings.job_ttl_s, ctx.settings.delivery_window_s, customer
    )
    if len(job_ids) <= INLINE_MAX:
        WEBHOOK_REPLAYED.inc(await replay)
        status = 200
    else:
        runs: set[asyncio.Task[None]] = ctx.extra.setdefault("dead_replays", set())  # type: ignore[assignment]
        task = asyncio.create_task(_in_background(replay, run_id), name=f"dead-replay-{run_id}")
        runs.add(task)
        task.add_done_callback(runs.discard)
        status = 202
    view = await bulk_replay.view(ctx.redis, run_id, customer)
    return json_response(view, status)


async def _in_background(replay: Coroutine[Any, Any, int], run_id: str) -> None:
    try:
        WEBHOOK_REPLAYED.inc(await replay)
    except Exception:  # the run stays "running"; posting the same filter again replays what is still dead
        log.warning("bulk replay %s stopped", run_id, exc_info=True)


async def replay_progress(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    run_id = request.match_info["replay_id"]
    view = await bulk_replay.view(ctx.redis, run_id, customer)
    if view is None:
        raise ApiError("not_found", f"no dead-letter replay {run_id!r} for this API key")
    return json_response(view)


ROUTES = [
    web.get("/api/v1/deliveries/dead", list_dead),
    web.post("/api/v1/deliveries/dead/{job_id}/replay", replay_dead),
    web.post("/api/v1/deliveries/dead/replay", replay_many),
    web.get("/api/v1/deliveries/dead/replay/{replay_id}", replay_progress),
]

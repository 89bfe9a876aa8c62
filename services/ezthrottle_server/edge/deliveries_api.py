"""Dead-lettered webhooks of the API key's customer: list and replay.

- ``GET /api/v1/deliveries/dead?limit=100`` -> ``{"dead": [{"job_id",
  "dead_at_ms", "job_status", "webhooks": [{"index", "url", "dead_reason",
  "attempts", "last_status_code", "last_error", ...}]}], "count"}``, oldest first.
- ``POST /api/v1/deliveries/dead/{job_id}/replay`` -> ``{"job_id",
  "replayed": n}``: the job's dead webhooks are queued again, each with a
  fresh retry window. 404 for a job of another customer or without
  delivery state; ``replayed`` is 0 when none of its webhooks is dead.
- ``POST /api/v1/deliveries/dead/replay`` with a filter (``job_ids``,
  ``dead_after``, ``dead_before``; common/bulk_replay.py) -> a bulk action
  (common/bulk.py): ``{"replay_id", "state", "matched", "jobs_done",
  "webhooks_replayed", ...}``, 200 and done when at most :data:`INLINE_MAX`
  jobs match, else 202 and running in the background (on this edge; another
  takes it over if this one stops); ``GET
  /api/v1/deliveries/dead/replay/{replay_id}`` reads its progress from any
  edge. 429 ``too_many_bulk_actions`` when the customer has its cap of bulk
  actions running.

A webhook replayed again within the window a replay gave it goes on in that
window; it does not get a new one (``delivery_replay.lua``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..common import bulk, bulk_replay, deliveries
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.metrics import WEBHOOK_REPLAYED
from .cancel_api import runner
from .context import CTX, EdgeContext

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
    created = bulk.now_ms()
    params = bulk_replay.params(flt, created)
    matched = await bulk_replay.count(ctx.redis, ctx.settings.partitions, customer, params)
    action = await bulk.create(
        ctx.redis, ctx.settings, customer, bulk_replay.KIND, bulk_replay.ID_PREFIX, params,
        matched=matched, matched_exact=True, created_ms=created,
    )  # fmt: skip
    if matched <= INLINE_MAX:
        await runner(ctx).run(action)
        return json_response(await _view(ctx, customer, action.action_id), 200)
    runner(ctx).start(action)
    return json_response(await _view(ctx, customer, action.action_id), 202)


async def _view(ctx: EdgeContext, customer: str, action_id: str) -> dict[str, Any]:
    record = await runner(ctx).current(customer, action_id, kind=bulk_replay.KIND, prefix=bulk_replay.ID_PREFIX, what="dead-letter replay")
    return bulk_replay.view(action_id, record)


async def replay_progress(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    return json_response(await _view(ctx, customer, request.match_info["replay_id"]))


ROUTES = [
    web.get("/api/v1/deliveries/dead", list_dead),
    web.post("/api/v1/deliveries/dead/{job_id}/replay", replay_dead),
    web.post("/api/v1/deliveries/dead/replay", replay_many),
    web.get("/api/v1/deliveries/dead/replay/{replay_id}", replay_progress),
]

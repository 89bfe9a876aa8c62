"""Dead-lettered webhooks of the API key's customer: list and replay.

- ``GET /api/v1/deliveries/dead?limit=100`` -> ``{"dead": [{"job_id",
  "dead_at_ms", "job_status", "webhooks": [{"index", "url", "dead_reason",
  "attempts", "last_status_code", "last_error", ...}]}], "count"}``, oldest first.
- ``POST /api/v1/deliveries/dead/{job_id}/replay`` -> ``{"job_id",
  "replayed": n}``: the job's dead webhooks are queued again, each with a
  fresh retry window. 404 for a job of another customer or without
  delivery state; ``replayed`` is 0 when none of its webhooks is dead.
"""

from __future__ import annotations

from aiohttp import web

from ..common import deliveries
from ..common.errors import ApiError
from ..common.http import json_response
from ..common.metrics import WEBHOOK_REPLAYED
from .context import CTX

MAX_LIMIT = 1000


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
    replayed = await deliveries.replay(ctx.redis, ctx.scripts, job_id, ctx.settings.region_ids, ctx.settings.job_ttl_s, customer=customer)
    if replayed is None:
        raise ApiError("not_found", f"no webhook deliveries for job {job_id!r} for this API key")
    WEBHOOK_REPLAYED.inc(replayed)
    return json_response({"job_id": job_id, "replayed": replayed})


ROUTES = [
    web.get("/api/v1/deliveries/dead", list_dead),
    web.post("/api/v1/deliveries/dead/{job_id}/replay", replay_dead),
]

"""``/api/v1/schedules``: a customer's recurring jobs (common/schedules.py; fired by coordinator/schedules.py).

- ``POST /api/v1/schedules``: ``{"cron": "*/5 * * * *"`` or ``"every_s": 60,
  "timezone": "UTC", "job": {...}, "overlap": "skip" | "allow"}``; the job is
  checked as a submission is (``validate_job``, the outbound policy), the cron
  expression and the zone by their libraries; 201 with the schedule.
- ``GET /api/v1/schedules``: the customer's schedules, oldest first.
- ``GET / PATCH / DELETE /api/v1/schedules/{schedule_id}``: one of them (PATCH:
  ``paused``, ``cron``, ``every_s``, ``timezone``, ``job``, ``overlap``; a new
  timing or a resume counts the next tick from now). Another customer's
  schedule is a 404.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import orjson
from aiohttp import web

from ..common import keys, schedule_scripts, schedules
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.schedule_scripts import PAUSED, Created
from .api import _check_outbound
from .context import CTX, EdgeContext


def _not_found(schedule_id: str) -> ApiError:
    return ApiError("not_found", f"no schedule {schedule_id!r} for this API key")


async def _load(ctx: EdgeContext, customer: str, schedule_id: str) -> dict[str, str]:
    if not schedules.is_schedule_id(schedule_id):
        raise _not_found(schedule_id)
    data: dict[str, str] = await ctx.redis.hgetall(keys.schedule(schedule_id))  # type: ignore[misc]  # redis-py#2399
    if not data or data.get("customer") != customer:
        raise _not_found(schedule_id)
    return data


async def create_schedule(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    body = await read_json(request, ctx.settings.max_body_bytes)
    spec = schedules.check_spec(body, ctx.settings.region_ids, partial=False)
    _check_outbound(ctx, spec["job"], "job")
    now = int(time.time() * 1000)
    schedule_id = f"sch_{secrets.token_hex(12)}"
    fields: dict[str, Any] = {
        "customer": customer,
        "cron": spec.get("cron", ""),
        "every_s": spec.get("every_s", ""),
        "anchor_ms": now,
        "timezone": spec["timezone"],
        "overlap": spec["overlap"],
        "job": orjson.dumps(spec["job"]),
        "region": ctx.settings.region or "",
        "paused": 0,
        "created_ms": now,
        "updated_ms": now,
    }
    next_ms = schedules.next_fire_ms({k: str(v) for k, v in fields.items() if k != "job"}, now)
    most = ctx.settings.schedules_max_per_customer
    created = await schedule_scripts.create(ctx.scripts.schedule_write, schedule_id, customer, fields, next_ms=next_ms, most=most)
    if created is Created.AT_MOST:
        raise ApiError("invalid_request", f"this API key's customer has {most} schedules, the most allowed: delete one first")
    return json_response(schedules.view(schedule_id, await ctx.redis.hgetall(keys.schedule(schedule_id))), 201)  # type: ignore[misc]  # redis-py#2399


async def list_schedules(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    ids = sorted(await ctx.redis.smembers(keys.customer_schedules(customer)))  # type: ignore[misc]  # redis-py#2399
    rows: list[dict[str, str]] = []
    if ids:
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(keys.schedule(schedule_id))
            rows = await pipe.execute()
    views = [schedules.view(sid, row) for sid, row in zip(ids, rows) if row and row.get("customer") == customer]
    views.sort(key=lambda v: (v["created_at_ms"] or 0, v["schedule_id"]))
    return json_response({"schedules": views})


async def get_schedule(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    schedule_id = request.match_info["schedule_id"]
    return json_response(schedules.view(schedule_id, await _load(ctx, customer, schedule_id)))


async def update_schedule(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    schedule_id = request.match_info["schedule_id"]
    data = await _load(ctx, customer, schedule_id)
    changes = schedules.check_spec(await read_json(request, ctx.settings.max_body_bytes), ctx.settings.region_ids, partial=True)
    now = int(time.time() * 1000)
    fields: dict[str, Any] = {"updated_ms": now}
    timing = False
    if "cron" in changes:
        fields.update(cron=changes["cron"], every_s="")
        timing = True
    if "every_s" in changes:
        fields.update(every_s=changes["every_s"], cron="", anchor_ms=now)
        timing = True
    if "timezone" in changes:
        fields["timezone"] = changes["timezone"]
        timing = timing or changes["timezone"] != data.get("timezone")
    if "overlap" in changes:
        fields["overlap"] = changes["overlap"]
    if "job" in changes:
        _check_outbound(ctx, changes["job"], "job")
        fields["job"] = orjson.dumps(changes["job"])
    was_paused = data.get("paused") == "1"
    if "paused" in changes:
        fields["paused"] = 1 if changes["paused"] else 0
        timing = timing or (was_paused and not changes["paused"])  # a resume: the next tick from now, the missed ones dropped
    merged = {**data, **{k: str(v) for k, v in fields.items() if k != "job"}}
    if merged.get("paused") == "1":
        next_ms: int | Literal["paused"] | None = PAUSED
    else:
        next_ms = schedules.next_fire_ms(merged, now) if timing else None
    if not await schedule_scripts.update(ctx.scripts.schedule_write, schedule_id, customer, fields, next_ms=next_ms):
        raise _not_found(schedule_id)
    return json_response(schedules.view(schedule_id, await ctx.redis.hgetall(keys.schedule(schedule_id))))  # type: ignore[misc]  # redis-py#2399


async def delete_schedule(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    schedule_id = request.match_info["schedule_id"]
    if not schedules.is_schedule_id(schedule_id):
        raise _not_found(schedule_id)
    if not await schedule_scripts.delete(ctx.scripts.schedule_delete, schedule_id, customer):
        raise _not_found(schedule_id)
    return json_response({"schedule_id": schedule_id, "deleted": True})


ROUTES = [
    web.post("/api/v1/schedules", create_schedule),
    web.get("/api/v1/schedules", list_schedules),
    web.get("/api/v1/schedules/{schedule_id}", get_schedule),
    web.patch("/api/v1/schedules/{schedule_id}", update_schedule),
    web.delete("/api/v1/schedules/{schedule_id}", delete_schedule),
]

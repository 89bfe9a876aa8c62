"""The public HTTP API of an edge node: jobs, health.

Every error is JSON ``{"error": {"code", "message", "field"?}}`` with the
status from :data:`~ezthrottle_server.common.errors.API_ERRORS`; bad input is
never a 500.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from ..common import keys
from ..common.deliveries import webhooks_view
from ..common.errors import ApiError, OutboundBlocked
from ..common.http import json_response, read_json, then
from ..common.jobs import MAX_CHAIN_DEPTH, validate_job
from ..common.urls import domain_of
from ..pacing.scope import SHARED
from .context import CTX, EdgeContext
from .events import stream_job_events
from .intake import Duplicate, Refused

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_outbound(ctx: EdgeContext, job: dict[str, Any], path: str = "") -> None:
    prefix = f"{path}." if path else ""
    checks = [(f"{prefix}url", job["url"])] + [(f"{prefix}webhooks[{i}].url", h["url"]) for i, h in enumerate(job["webhooks"])]
    for field, url in checks:
        try:
            ctx.outbound.check_url(url)
        except OutboundBlocked as exc:
            raise ApiError("outbound_blocked", f"{field}: {exc}", field=field) from exc
    for child in ("fallback_job", "on_success", "on_failure"):
        if job.get(child):
            _check_outbound(ctx, job[child], f"{prefix}{child}")


async def submit_job(request: web.Request) -> web.StreamResponse:
    """``POST /api/v1/jobs``: validate, then :meth:`Intake.accept <.intake.Intake.accept>` makes it durable."""
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    ctx.admission.check(customer)
    payload = await read_json(request, ctx.settings.max_body_bytes)
    now = _now_ms()
    job = validate_job(payload, ctx.settings.region_ids, latest_retry_at_ms=now + ctx.settings.retry_at_horizon_ms, now_ms=now)
    _check_outbound(ctx, job)
    accepted = await ctx.intake.accept(job, customer)
    if isinstance(accepted, Refused):
        raise accepted.error
    if isinstance(accepted, Duplicate):
        return json_response({"job_id": accepted.job_id, "status": "duplicate", "idempotent_key": accepted.idempotent_key}, 200)
    try:
        resp = json_response({"job_id": accepted.job_id, "status": accepted.status, "idempotent_key": accepted.idempotent_key}, 201)
    except BaseException:
        if accepted.send is not None:  # created: sent whatever becomes of the answer
            accepted.send()
        raise
    # A taken job is sent once its 201 has been written, by whoever writes it
    # (common/http.py: the route's middleware, or the proxy's envelope).
    return resp if accepted.send is None else then(resp, accepted.send)


async def get_usage(request: web.Request) -> web.Response:
    """This month's count for the key's customer, with tier, included, cap and overage."""
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    return json_response(await ctx.quotas.usage(customer))


async def load_job_view(ctx: EdgeContext, customer: str, job_id: str) -> dict[str, Any]:
    """The job as the API shows it, or 404 if it is not this customer's."""
    not_found = ApiError("not_found", f"no job {job_id!r} for this API key")
    if keys.job_partition(job_id) is None:
        raise not_found
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.lrange(keys.attempts(job_id), 0, -1)
        pipe.hgetall(keys.job_webhooks(job_id))
        data, attempts, hooks = await pipe.execute()
    if not data or data.get("customer") != customer:
        raise not_found
    view = job_view(job_id, data, attempts, hooks)
    view["waiting_on"] = await _waiting_on(ctx, view) if view["status"] in ("queued", "scheduled") else None
    if data.get("chain") == "1" or data.get("parent"):
        view["workflow"] = {
            "root_job_id": data.get("root") or job_id,
            "parent_job_id": data.get("parent") or None,
            "relation": data.get("relation") or None,
            "continuation": data.get("cont") or None,
            "children": await _children(ctx, data),
        }
    return view


async def _waiting_on(ctx: EdgeContext, view: dict[str, Any]) -> str | None:
    """What holds a job that waits, beyond its turn: its domain's circuit breaker, or a Retry-After pause."""
    domain = domain_of(view["url"])
    open_until, pause_until = await ctx.redis.hmget(keys.pacing_limit(domain, SHARED), "cb_open_until", "pause_until")  # type: ignore[arg-type, misc]  # redis-py#2399
    if float(open_until or 0) > 0:
        return "circuit_open"
    if float(pause_until or 0) > _now_ms():
        return "domain_paused"
    return None


async def _children(ctx: EdgeContext, data: dict[str, str], depth: int = 0) -> list[dict[str, Any]]:
    """The workflow tree below a job: each child's relation, id and status, recursively."""
    links = [(k.split(":", 1)[1], v) for k, v in sorted(data.items()) if k.startswith("child:")]
    if not links or depth > MAX_CHAIN_DEPTH:
        return []
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for _relation, child_id in links:
            pipe.hgetall(keys.job(child_id))
        rows = await pipe.execute()
    out = []
    for (relation, child_id), row in zip(links, rows):
        out.append(
            {
                "relation": relation,
                "job_id": child_id,
                "status": row.get("state") if row else "expired",
                "children": await _children(ctx, row, depth + 1) if row else [],
            }
        )
    return out


async def get_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    return json_response(await load_job_view(ctx, customer, request.match_info["job_id"]))


async def job_events(request: web.Request) -> web.StreamResponse:
    """The job's live events as server-sent events (see edge/events.py)."""
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    job_id = request.match_info["job_id"]
    await load_job_view(ctx, customer, job_id)  # 404 before the stream starts

    async def view() -> dict[str, Any]:
        return await load_job_view(ctx, customer, job_id)

    return await stream_job_events(request, ctx.events, view)


async def list_regions(request: web.Request) -> web.Response:
    """Each region's state and the reason for it, as the coordinator publishes it."""
    ctx = request.app[CTX]
    views = await ctx.regions.views()
    regions = [{"id": r.id, "edges": [], **views[r.id]} for r in ctx.settings.regions]
    return json_response({"regions": regions, "this_region": ctx.settings.region})


ROUTES = [
    web.get("/api/v1/regions", list_regions),
    web.get("/api/v1/usage", get_usage),
    web.post("/api/v1/jobs", submit_job),
    web.get("/api/v1/jobs/{job_id}", get_job),
    web.get("/api/v1/jobs/{job_id}/events", job_events),
]


def _int_or_none(v: str | None) -> int | None:
    return int(v) if v else None


def _region_outcomes(data: dict[str, str], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Each region's attempts and, for fanout jobs, its outcome."""
    out: dict[str, Any] = {}
    for a in attempts:
        region = out.setdefault(a["region"], {"attempts": 0, "lost": False})
        region["attempts"] += 1
        region["last_status_code"] = a.get("status_code")
        region["lost"] = region["lost"] or bool(a.get("lost"))
    for key, value in data.items():
        if key.startswith("fanout:"):
            out.setdefault(key[len("fanout:") :], {"attempts": 0, "lost": False})["outcome"] = orjson.loads(value)["status"]
    return out


def job_view(job_id: str, data: dict[str, str], attempts: list[str], webhooks: dict[str, str] | None = None) -> dict[str, Any]:
    spec = orjson.loads(data["spec"])
    parsed_attempts = [orjson.loads(a) for a in attempts]
    return {
        "job_id": job_id,
        "status": data.get("state"),
        "idempotent_key": data.get("idempotent_key"),
        "url": spec["url"],
        "method": spec["method"],
        "metadata": spec["metadata"],
        "regions": [r for r in data.get("regions", "").split(",") if r],
        "winner_region": data.get("winner") or None,
        "created_at_ms": _int_or_none(data.get("created_ms")),
        "started_at_ms": _int_or_none(data.get("started_ms")),
        "finished_at_ms": _int_or_none(data.get("finished_ms")),
        "start_before_ms": _int_or_none(data.get("start_before_ms")),
        "cancel_requested": data.get("cancel_requested") == "1",
        "schedule_id": data.get("schedule") or None,  # the schedule that fired it (common/schedules.py)
        "execution_mode": data.get("mode", spec.get("execution_mode", "race")),
        "regions_tried": [r for r in data.get("tried", "").split(",") if r],
        "retries": sum(int(v) for k, v in data.items() if k.startswith("retries:")),
        "reroutes": int(data.get("reroutes", 0)),
        # Moves out of a region judged down (coordinator/evacuate.py), each a reroute with the reason region_down.
        "evacuations": [
            {"from": move.partition(">")[0], "to": move.partition(">")[2], "reason": "region_down"}
            for move in (data.get("evacuated") or "").split(",")
            if move
        ],
        "maybe_sent": data.get("maybe_sent") == "1",
        "region_outcomes": _region_outcomes(data, parsed_attempts),
        "error": data.get("error") or None,
        "result": orjson.loads(data["result"]) if data.get("result") else None,
        "attempts": parsed_attempts,
        "webhooks": webhooks_view(spec, webhooks or {}),
    }

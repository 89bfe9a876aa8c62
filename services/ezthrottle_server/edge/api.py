"""The public HTTP API of an edge node: jobs (one, or a batch), health.

Every error is JSON ``{"error": {"code", "message", "field"?}}`` with the
status from :data:`~ezthrottle_server.common.errors.API_ERRORS`; bad input is
never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import ResponseError

from ..common import keys
from ..common.deliveries import webhooks_view
from ..common.errors import ApiError, OutboundBlocked
from ..common.http import json_response, read_json, then
from ..common.jobs import MAX_CHAIN_DEPTH, hash_key, validate_job
from ..common.metrics import JOBS_DUPLICATE
from ..common.redisconn import REDIS_UNAVAILABLE
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


def checked_job(ctx: EdgeContext, payload: Any, now_ms: int, path: str = "") -> dict[str, Any]:
    """One job as ``POST /api/v1/jobs`` takes it, validated (common/jobs.py) and allowed by the outbound policy; or the
    ApiError naming its field, under ``path`` (``jobs[3].url`` in a batch)."""
    horizon = now_ms + ctx.settings.retry_at_horizon_ms
    job = validate_job(payload, ctx.settings.region_ids, latest_retry_at_ms=horizon, now_ms=now_ms, _path=path)
    _check_outbound(ctx, job, path)
    return job


@dataclass(slots=True)
class Answer:
    """What the API answers for one accepted job: its status alone, its body, and a taken job's send."""

    status: int  # 201 created, 200 a duplicate
    body: dict[str, Any]
    send: Callable[[], None] | None = None  # run once the answer has been written (common/http.py then)


async def accept_checked(ctx: EdgeContext, job: dict[str, Any], customer: str) -> Answer:
    """:meth:`Intake.accept <.intake.Intake.accept>` a checked job; a refusal (quota, ceiling) is raised."""
    accepted = await ctx.intake.accept(job, customer)
    if isinstance(accepted, Refused):
        raise accepted.error
    if isinstance(accepted, Duplicate):
        return Answer(200, {"job_id": accepted.job_id, "status": "duplicate", "idempotent_key": accepted.idempotent_key})
    return Answer(201, {"job_id": accepted.job_id, "status": accepted.status, "idempotent_key": accepted.idempotent_key}, accepted.send)


async def submit_job(request: web.Request) -> web.StreamResponse:
    """``POST /api/v1/jobs``: validate, then :meth:`Intake.accept <.intake.Intake.accept>` makes it durable."""
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    ctx.admission.check(customer)
    payload = await read_json(request, ctx.settings.max_body_bytes)
    answer = await accept_checked(ctx, checked_job(ctx, payload, _now_ms()), customer)
    return _answered(answer.body, answer.status, [answer.send] if answer.send else [])


def _answered(body: Any, status: int, sends: list[Callable[[], None]]) -> web.StreamResponse:
    """The response, with the taken jobs' sends to run once it has been written (by whoever writes it:
    common/http.py, the route's middleware or the proxy's envelope); they run whatever becomes of the answer."""
    try:
        resp = json_response(body, status)
    except BaseException:
        _send_all(sends)  # created: sent whatever becomes of the answer
        raise
    return then(resp, partial(_send_all, sends)) if sends else resp


def _send_all(sends: list[Callable[[], None]]) -> None:
    for send in sends:
        try:
            send()
        except Exception:  # each is meant not to raise; one that does must not keep the others' jobs unsent
            log.exception("a taken job's send failed to start")


# -- POST /api/v1/jobs/batch --------------------------------------------------------------


async def submit_batch(request: web.Request) -> web.StreamResponse:
    """``POST /api/v1/jobs/batch``: ``{"jobs": [job, ...]}``, each job as ``POST /api/v1/jobs`` takes it.

    One request for up to ``EZT_MAX_BATCH_JOBS`` jobs: authentication and the
    admission check once; every job is checked before any is accepted, so an
    invalid one refuses the whole batch (400/422 naming ``jobs[<i>].<field>``)
    and nothing is written: fix it and send the batch again. Then each job is
    accepted as a single submission would be, concurrently (their scripts go
    to Redis in one pipeline), with its own quota, ceiling and idempotent key;
    a later job with the key of an earlier one in the batch is not submitted
    again but answers ``duplicate`` with the first's id (or the first's
    error), as it would sent after it. The answer is 200 with one result per
    job, in order: ``{"job_id", "status", "idempotent_key"}`` (status
    ``queued``, ``racing`` or ``duplicate``), or ``{"error": {"code",
    "message", "retry_after_s"?}}`` for a job refused at acceptance
    (``quota_exceeded``, ``overloaded``, ``unavailable``). The body may be
    ``EZT_MAX_BODY_BYTES`` x min(jobs limit, 10) (413 above), each job no
    larger than one single body.
    """
    ctx = request.app[CTX]
    settings = ctx.settings
    customer = await ctx.auth.customer(request)
    ctx.admission.check(customer)
    limit = settings.max_batch_body_bytes
    payload = await read_json(request.clone(client_max_size=limit) if limit != settings.max_body_bytes else request, limit)
    items = _batch_items(payload, settings.max_batch_jobs)
    now = _now_ms()
    jobs = [checked_job(ctx, item, now, f"jobs[{i}]") for i, item in enumerate(items)]  # all, before any is accepted
    if request.content_length is None or request.content_length > settings.max_body_bytes:  # then one job alone may be too large
        _check_item_sizes(items, settings.max_body_bytes)
    # Each job is accepted once per idempotent key: a later job with the key of an earlier one is its duplicate.
    firsts: dict[str, int] = {}
    first_of = [firsts.setdefault(job["idempotent_key"] or hash_key(customer, job), i) for i, job in enumerate(jobs)]
    await ctx.intake.prepare(customer)  # so that the first jobs are the first to reach Redis
    tasks = {i: asyncio.ensure_future(accept_checked(ctx, jobs[i], customer)) for i in firsts.values()}
    try:
        await asyncio.wait(tasks.values())
    except BaseException:  # given up: each accepted job is sent as its acceptance ends, as a single one would be
        for task in tasks.values():
            task.add_done_callback(_send_if_taken)
        raise
    outcomes = {i: _outcome(task) for i, task in tasks.items()}
    failed = [o for o in outcomes.values() if isinstance(o, BaseException) and not isinstance(o, ApiError)]
    if len(failed) == len(outcomes):
        raise failed[0]  # nothing accepted: the usual answer (503 when Redis is unavailable)
    results = [_batch_result(outcomes[first], duplicate=first != i) for i, first in enumerate(first_of)]
    repeated = sum(1 for i, first in enumerate(first_of) if first != i and isinstance(outcomes[first], Answer))
    if repeated:
        JOBS_DUPLICATE.labels(settings.region).inc(repeated)
    sends = [o.send for o in outcomes.values() if isinstance(o, Answer) and o.send is not None]
    return _answered({"jobs": results}, 200, sends)


def _batch_result(outcome: Answer | BaseException, *, duplicate: bool) -> dict[str, Any]:
    """A job's place in the batch's answer; ``duplicate``: the outcome is an earlier job's with the same key."""
    if not isinstance(outcome, Answer):
        return _item_error(outcome)
    if duplicate:
        return {**outcome.body, "status": "duplicate"}
    return outcome.body


def _outcome(task: asyncio.Future[Answer]) -> Answer | BaseException:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


def _batch_items(payload: Any, max_jobs: int) -> list[Any]:
    if not isinstance(payload, dict):
        raise ApiError("invalid_request", 'body: must be a JSON object {"jobs": [job, ...]}')
    unknown = sorted(set(payload) - {"jobs"})
    if unknown:
        raise ApiError("unknown_field", f'{unknown[0]}: unknown field; the body is {{"jobs": [job, ...]}}', field=unknown[0])
    if "jobs" not in payload:
        raise ApiError("missing_field", "jobs: is required (a list of jobs)", field="jobs")
    items = payload["jobs"]
    if not isinstance(items, list):
        raise ApiError("invalid_field", "jobs: must be a list of jobs", field="jobs")
    if not items:
        raise ApiError("invalid_field", "jobs: must hold at least one job", field="jobs")
    if len(items) > max_jobs:
        raise ApiError("invalid_field", f"jobs: {len(items)} jobs; at most {max_jobs} in one request", field="jobs")
    return items


def _check_item_sizes(items: list[Any], max_bytes: int) -> None:
    """Each job (already validated) within the single body limit, as JSON, as POST /api/v1/jobs would take it."""
    for i, item in enumerate(items):
        try:
            size = len(orjson.dumps(item))
        except orjson.JSONEncodeError as exc:  # valid jobs nest far less than the encoder allows; never a 500 all the same
            raise ApiError("invalid_field", f"jobs[{i}]: cannot be measured ({exc})", field=f"jobs[{i}]") from exc
        if size > max_bytes:
            message = f"jobs[{i}]: the job is {size} bytes as JSON; one job's limit is {max_bytes}"
            raise ApiError("payload_too_large", message, field=f"jobs[{i}]")


def _item_error(exc: BaseException) -> dict[str, Any]:
    """A job refused at its acceptance, as its place in the batch's answer."""
    if not isinstance(exc, ApiError):
        if isinstance(exc, REDIS_UNAVAILABLE) or (isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)):
            log.warning("a batch's job was not accepted: the job store is unavailable (%s)", exc)
            exc = ApiError(
                "unavailable",
                "the job store is unavailable; this job may not have been accepted: submit it again (its idempotent key makes that safe)",
            )
        else:
            log.error("a batch's job failed", exc_info=exc)
            exc = ApiError("internal_error", "internal error; it has been logged")
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    retry_after = exc.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        error["retry_after_s"] = int(retry_after)
    return {"error": error}


def _send_if_taken(task: asyncio.Future[Answer]) -> None:
    outcome = _outcome(task)
    if isinstance(outcome, Answer) and outcome.send is not None:
        _send_all([outcome.send])


async def get_usage(request: web.Request) -> web.Response:
    """This month's count for the key's customer, with tier, included, cap and overage; and the bytes its jobs
    hold of Redis against its byte budget (common/storage.py)."""
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    usage = await ctx.quotas.usage(customer)
    budget = ctx.admission.budget
    usage["storage"] = {"bytes": await budget.usage(customer), "budget_bytes": await budget.budget() or None}
    return json_response(usage)


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
    web.post("/api/v1/jobs/batch", submit_batch),
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

"""Cancelling jobs: ``DELETE /api/v1/jobs/{id}`` and ``POST /api/v1/jobs/cancel`` (issue 17).

A job that waits (queued, delayed, parked in its domain's queue, between
retries, raced in several regions) ends ``cancelled`` at once, and nothing is
sent after the answer (``common/cancels.py`` says how). One with an attempt
in flight answers 409 ``in_flight``, or with ``?after_attempt=true`` 202
``cancel_requested``: it ends ``cancelled`` when that attempt ends, the
attempt's result kept (a success it brings stands). A final job answers 409
``already_final``; another customer's job is a 404. Cancelling a workflow's
job cancels what is pending below it (its children and their timers; a
continuation not started yet never starts).

Bulk: ``POST /api/v1/jobs/cancel`` with ``{"job_ids": [...], "after_attempt":
false}`` (at most :data:`MAX_BULK` ids) answers a count per outcome and each
job's outcome. With ``{"filter": {...}}`` (the filters of ``GET
/api/v1/jobs``, ``edge/search_api.py``: ``status``, ``domain``,
``created_after``, ``created_before``, ``metadata.<key>``, ``root_job_id``;
the jobs not yet final unless ``status`` says otherwise, created before the
call) it is a bulk action (``common/bulk.py``, ``common/bulk_cancel.py``):
at most :data:`INLINE_MAX` matches are cancelled in the call (200, ``state:
done``, each job's outcome too); more answer 202 at once with the action's
id, ``matched`` (exact when ``matched_exact``: counted up to
:data:`COUNT_MAX` jobs; more, and it is the count so far, a lower bound), and
run in the background. ``GET /api/v1/jobs/cancel/{action_id}`` reads its
progress from any edge: ``matched``, ``cancelled``, ``cancel_requested``,
``in_flight``, ``skipped_final``, ``not_found``, ``state`` (running | done |
failed) and its times. An action whose edge stopped is taken over by another
edge (or by the next read of its progress) and goes on from where it was.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

from ..common import bulk, bulk_cancel
from ..common.bulk import BulkRunner
from ..common.cancels import CancelOutcome, CancelReply, end_job
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.job_index import JobFilter
from .context import CTX, EdgeContext
from .search_api import MAX_LIMIT, parse_query

MAX_BULK = 1000
BULK_OUTCOMES = ("cancelled", "cancel_requested", "in_flight", "already_final", "not_found")
INLINE_MAX = 100  # a filter matching more runs in the background (202)
COUNT_MAX = 5000  # jobs a filtered cancel counts before it answers; more: matched is a lower bound
RUNNER = "bulk_runner"  # ctx.extra's key for this edge's BulkRunner (edge/app.py)


def runner(ctx: EdgeContext) -> BulkRunner:
    """This edge's runner of bulk actions (started with the app)."""
    found = ctx.extra.get(RUNNER)
    if not isinstance(found, BulkRunner):
        found = ctx.extra[RUNNER] = BulkRunner(ctx.redis, ctx.scripts, ctx.settings, ctx.settings.node_id)
    return found


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError("invalid_field", f"{name}: must be true or false", field=name)
    return raw in ("true", "1")


async def _cancel(ctx: EdgeContext, customer: str, job_id: str, after_attempt: bool, via: str = "single") -> CancelReply:
    now = int(time.time() * 1000)
    return await end_job(ctx.redis, ctx.scripts, ctx.settings, job_id, customer=customer, now_ms=now, after_attempt=after_attempt, via=via)


async def cancel_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    job_id = request.match_info["job_id"]
    after_attempt = _flag(request, "after_attempt")
    reply = await _cancel(ctx, customer, job_id, after_attempt)
    outcome = reply.outcome
    if outcome is CancelOutcome.NOT_FOUND:
        raise ApiError("not_found", f"no job {job_id!r} for this API key")
    if outcome is CancelOutcome.IN_FLIGHT:
        raise ApiError("in_flight", f"job {job_id} has an attempt in flight; ?after_attempt=true cancels it once that attempt ends")
    body: dict[str, Any] = {
        "job_id": job_id,
        "status": outcome.value,
        "children_cancelled": reply.children_cancelled,
        "children_cancel_requested": reply.children_requested,
    }
    if outcome is CancelOutcome.ALREADY_FINAL:
        if not reply.children_cancelled and not reply.children_requested:
            raise ApiError("already_final", f"job {job_id} has already ended")
        body["status"] = "already_final"  # the job had ended; what was pending below it is cancelled
        return json_response(body, 200)
    return json_response(body, 202 if outcome is CancelOutcome.CANCEL_REQUESTED else 200)


async def cancel_jobs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    payload = await read_json(request, ctx.settings.max_body_bytes)
    if not isinstance(payload, dict):
        raise ApiError("invalid_request", "body: must be a JSON object")
    unknown = set(payload) - {"job_ids", "filter", "after_attempt"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError("unknown_field", f"{name}: unknown field; allowed: after_attempt, filter, job_ids", field=name)
    after_attempt = payload.get("after_attempt", False)
    if not isinstance(after_attempt, bool):
        raise ApiError("invalid_field", "after_attempt: must be true or false", field="after_attempt")
    ids = payload.get("job_ids")
    if "filter" in payload:
        if ids is not None:
            raise ApiError("invalid_request", "give job_ids or filter, not both", field="filter")
        return await _cancel_matching(ctx, customer, parse_filter(payload["filter"]), after_attempt)
    if ids is None:
        raise ApiError("missing_field", "job_ids: required (a list of job ids), or filter", field="job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise ApiError("invalid_field", "job_ids: must be a list of job ids", field="job_ids")
    if len(ids) > MAX_BULK:
        raise ApiError("invalid_field", f"job_ids: at most {MAX_BULK} per call", field="job_ids")
    counts = dict.fromkeys(BULK_OUTCOMES, 0)
    jobs: dict[str, str] = {}
    for job_id in dict.fromkeys(ids):  # each id once, in order
        outcome = (await _cancel(ctx, customer, job_id, after_attempt, via="bulk")).outcome.value
        counts[outcome] = counts.get(outcome, 0) + 1
        jobs[job_id] = outcome
    return json_response({"counts": counts, "jobs": jobs, "more": False})


def parse_filter(raw: Any) -> JobFilter:
    """A ``GET /api/v1/jobs`` filter given as a JSON object; 400 naming ``filter.<name>``."""
    if not isinstance(raw, dict):
        raise ApiError("invalid_field", "filter: must be an object of GET /api/v1/jobs filters", field="filter")
    query: MultiDict[str] = MultiDict()
    for name, value in raw.items():
        if name in ("limit", "cursor"):
            raise ApiError("unknown_field", f"filter.{name}: not a filter", field=f"filter.{name}")
        values = value if isinstance(value, list) and name == "status" else [value]
        for v in values:
            if isinstance(v, (dict, list)):
                raise ApiError("invalid_field", f"filter.{name}: must be a string, a number, true, false or null", field=f"filter.{name}")
            query.add(str(name), v if isinstance(v, str) else orjson.dumps(v).decode())
    try:
        flt, _limit, _cursor = parse_query(query)
    except ApiError as exc:
        raise ApiError(exc.code, f"filter.{exc.message}", field=f"filter.{exc.field}" if exc.field else "filter") from exc
    return flt


async def _count(ctx: EdgeContext, customer: str, flt: JobFilter) -> tuple[int, bool]:
    """How many jobs the filter matches (at most about COUNT_MAX), and whether that is all of them."""
    found, cursor = 0, ""
    limit = INLINE_MAX + 1  # the first page tells a small set from a large one
    while found <= COUNT_MAX:
        page = await bulk_cancel.page(ctx.redis, ctx.settings, customer, flt, cursor, limit)
        found += len(page.jobs)
        if page.next_cursor is None:
            return found, True
        cursor = bulk_cancel.decode(page.next_cursor)
        limit = MAX_LIMIT
    return found, False


async def _cancel_matching(ctx: EdgeContext, customer: str, flt: JobFilter, after_attempt: bool) -> web.Response:
    created = bulk.now_ms()
    params = bulk_cancel.params(flt, after_attempt, created)
    matched, exact = await _count(ctx, customer, bulk_cancel.job_filter(params))
    action = await bulk.create(
        ctx.redis, ctx.settings, customer, bulk_cancel.KIND, bulk_cancel.ID_PREFIX, params,
        matched=matched, matched_exact=exact, created_ms=created,
    )  # fmt: skip
    if exact and matched <= INLINE_MAX:
        outcomes = await runner(ctx).run(action)
        body = await _view(ctx, customer, action.action_id)
        counts = dict.fromkeys(BULK_OUTCOMES, 0)
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return json_response({**body, "counts": counts, "jobs": outcomes, "more": False}, 200)
    runner(ctx).start(action)
    return json_response(await _view(ctx, customer, action.action_id), 202)


async def _view(ctx: EdgeContext, customer: str, action_id: str) -> dict[str, Any]:
    record = await runner(ctx).current(customer, action_id, kind=bulk_cancel.KIND, prefix=bulk_cancel.ID_PREFIX, what="bulk cancel")
    return bulk_cancel.view(action_id, record)


async def cancel_progress(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    return json_response(await _view(ctx, customer, request.match_info["action_id"]))


ROUTES = [
    web.delete("/api/v1/jobs/{job_id}", cancel_job),
    web.post("/api/v1/jobs/cancel", cancel_jobs),
    web.get("/api/v1/jobs/cancel/{action_id}", cancel_progress),
]

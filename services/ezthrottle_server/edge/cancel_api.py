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
false}`` (at most :data:`MAX_BULK` ids), or with ``{"filter": {...}}``: the
filters of ``GET /api/v1/jobs`` (``edge/search_api.py``, the same parsing and
the same listing: ``status``, ``domain``, ``created_after``,
``created_before``, ``metadata.<key>``, ``root_job_id``), the jobs not yet
final unless ``status`` says otherwise, at most :data:`MAX_BULK` per call
(``"more": true`` when others matched: call again). It answers a count per
outcome and each job's outcome.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

from ..common import job_index
from ..common.cancels import CancelOutcome, CancelReply, end_job
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from .context import CTX, EdgeContext
from .search_api import MAX_LIMIT, parse_query

MAX_BULK = 1000
BULK_OUTCOMES = ("cancelled", "cancel_requested", "in_flight", "already_final", "not_found")
NOT_FINAL = ("queued", "scheduled", "running")  # what a filter matches unless its status says otherwise
MAX_PAGES = 50  # listing pages read for one filtered cancel (each reads a bounded number of jobs)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError("invalid_field", f"{name}: must be true or false", field=name)
    return raw in ("true", "1")


async def _cancel(ctx: EdgeContext, customer: str, job_id: str, after_attempt: bool) -> CancelReply:
    return await end_job(
        ctx.redis, ctx.scripts, ctx.settings, job_id, customer=customer, now_ms=int(time.time() * 1000), after_attempt=after_attempt
    )


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
    more = False
    if "filter" in payload:
        if ids is not None:
            raise ApiError("invalid_request", "give job_ids or filter, not both", field="filter")
        ids, more = await _matching(ctx, customer, payload["filter"])
    elif ids is None:
        raise ApiError("missing_field", "job_ids: required (a list of job ids), or filter", field="job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise ApiError("invalid_field", "job_ids: must be a list of job ids", field="job_ids")
    if len(ids) > MAX_BULK:
        raise ApiError("invalid_field", f"job_ids: at most {MAX_BULK} per call", field="job_ids")
    counts = dict.fromkeys(BULK_OUTCOMES, 0)
    jobs: dict[str, str] = {}
    for job_id in dict.fromkeys(ids):  # each id once, in order
        outcome = (await _cancel(ctx, customer, job_id, after_attempt)).outcome.value
        counts[outcome] = counts.get(outcome, 0) + 1
        jobs[job_id] = outcome
    return json_response({"counts": counts, "jobs": jobs, "more": more})


async def _matching(ctx: EdgeContext, customer: str, raw: Any) -> tuple[list[str], bool]:
    """The ids of the customer's jobs a ``GET /api/v1/jobs`` filter matches (at most MAX_BULK), and whether more did."""
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
    if not flt.statuses:
        flt.statuses = frozenset(NOT_FINAL)
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await job_index.list_jobs(ctx.redis, ctx.settings.partitions, customer, flt, limit=MAX_LIMIT, cursor=cursor)
        ids += [job["job_id"] for job in page.jobs]
        if len(ids) > MAX_BULK:
            return ids[:MAX_BULK], True
        if page.next_cursor is None:
            return ids, False
        cursor = job_index.decode_cursor(page.next_cursor)
    return ids, True


ROUTES = [
    web.delete("/api/v1/jobs/{job_id}", cancel_job),
    web.post("/api/v1/jobs/cancel", cancel_jobs),
]

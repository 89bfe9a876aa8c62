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
job's outcome.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..common.cancels import CancelOutcome, CancelReply, end_job
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from .context import CTX, EdgeContext

MAX_BULK = 1000
BULK_OUTCOMES = ("cancelled", "cancel_requested", "in_flight", "already_final", "not_found")


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
    unknown = set(payload) - {"job_ids", "after_attempt"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError("unknown_field", f"{name}: unknown field; allowed: after_attempt, job_ids", field=name)
    ids = payload.get("job_ids")
    if ids is None:
        raise ApiError("missing_field", "job_ids: required (a list of job ids)", field="job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise ApiError("invalid_field", "job_ids: must be a list of job ids", field="job_ids")
    if len(ids) > MAX_BULK:
        raise ApiError("invalid_field", f"job_ids: at most {MAX_BULK} per call", field="job_ids")
    after_attempt = payload.get("after_attempt", False)
    if not isinstance(after_attempt, bool):
        raise ApiError("invalid_field", "after_attempt: must be true or false", field="after_attempt")
    counts = dict.fromkeys(BULK_OUTCOMES, 0)
    jobs: dict[str, str] = {}
    for job_id in dict.fromkeys(ids):  # each id once, in order
        outcome = (await _cancel(ctx, customer, job_id, after_attempt)).outcome.value
        counts[outcome] = counts.get(outcome, 0) + 1
        jobs[job_id] = outcome
    return json_response({"counts": counts, "jobs": jobs})


ROUTES = [
    web.delete("/api/v1/jobs/{job_id}", cancel_job),
    web.post("/api/v1/jobs/cancel", cancel_jobs),
]

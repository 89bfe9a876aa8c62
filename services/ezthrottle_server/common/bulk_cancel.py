"""Cancelling the jobs a filter matches, as a bulk action (``common/bulk.py``; ``POST /api/v1/jobs/cancel`` with a filter).

The filter is ``GET /api/v1/jobs``'s (:class:`~.job_index.JobFilter`), the
jobs not yet final unless its ``status`` says otherwise, and only those
created before the action (``created_before`` is capped at its creation):
jobs submitted later are not cancelled by it. A step lists one page of them,
newest first, from the action's cursor (a position in the customer's job
index, ``common/job_index.py``) and cancels each (``common/cancels.py``,
:data:`CONCURRENCY` at a time).

Counters: ``cancelled``, ``cancel_requested`` (``after_attempt``: ends
cancelled when its attempt ends), ``in_flight`` (an attempt under way, not
cancelled), ``skipped_final`` (already final), ``not_found`` (expired
meanwhile).

A job the action cancelled is final and no longer matches a filter of jobs
not final: a runner taking over from the cursor would not see those of the
page its predecessor was on. So a step also lists ``cancelled`` jobs (unless
the filter asked for them) and counts as cancelled by the action those that
ended after it was created; cancelled before it, they are left out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import job_index
from .bulk import Action, StepResult, now_ms
from .cancels import CancelOutcome, end_job
from .config import Settings
from .job_index import JobFilter
from .redisconn import Scripts

if TYPE_CHECKING:
    from .redisconn import RedisClient

KIND = "cancel"
ID_PREFIX = "cnl_"
PAGE = 200  # jobs listed by one step (GET /api/v1/jobs's most)
CONCURRENCY = 16  # cancels in flight at once in one step
COUNTERS = ("cancelled", "cancel_requested", "in_flight", "skipped_final", "not_found")
NOT_FINAL = ("queued", "scheduled", "running")
_COUNTER_OF = {
    CancelOutcome.CANCELLED: "cancelled",
    CancelOutcome.CANCEL_REQUESTED: "cancel_requested",
    CancelOutcome.IN_FLIGHT: "in_flight",
    CancelOutcome.ALREADY_FINAL: "skipped_final",
    CancelOutcome.NOT_FOUND: "not_found",
}


def params(flt: JobFilter, after_attempt: bool, created_ms: int) -> dict[str, Any]:
    """An action's params: the filter (jobs not final unless it says; created before the action) and after_attempt."""
    before = created_ms + 1 if flt.created_before is None else min(flt.created_before, created_ms + 1)
    return {
        "statuses": sorted(flt.statuses or NOT_FINAL),
        "domain": flt.domain,
        "created_after": flt.created_after,
        "created_before": before,
        "metadata": dict(flt.metadata),
        "root_job_id": flt.root_job_id,
        "after_attempt": after_attempt,
    }


def job_filter(p: dict[str, Any], *, with_cancelled: bool = False) -> JobFilter:
    statuses = set(p["statuses"]) | ({"cancelled"} if with_cancelled else set())
    return JobFilter(
        statuses=frozenset(statuses), domain=p["domain"], created_after=p["created_after"], created_before=p["created_before"],
        metadata=dict(p["metadata"]), root_job_id=p["root_job_id"],
    )  # fmt: skip


def decode(cursor: str) -> str:
    """A listing's next_cursor as the position the next page starts from."""
    position = job_index.decode_cursor(cursor)
    assert position is not None  # the listing made it
    return position


async def page(redis: RedisClient, settings: Settings, customer: str, flt: JobFilter, cursor: str, limit: int = PAGE) -> job_index.Page:
    return await job_index.list_jobs(redis, settings.partitions, customer, flt, limit=limit, cursor=cursor or None)


async def step(redis: RedisClient, scripts: Scripts, settings: Settings, action: Action) -> StepResult:
    """Cancel the next page of jobs the action's filter matches."""
    p = action.params
    asked_cancelled = "cancelled" in p["statuses"]
    listed = await page(redis, settings, action.customer, job_filter(p, with_cancelled=not asked_cancelled), action.cursor)
    counts = dict.fromkeys(COUNTERS, 0)
    outcomes: dict[str, str] = {}
    todo: list[str] = []
    for job in listed.jobs:
        if job["status"] == "cancelled" and not asked_cancelled:
            if (job["finished_at_ms"] or 0) >= action.created_ms:  # this action's (a runner before this one), or cancelled meanwhile
                counts["cancelled"] += 1
                outcomes[job["job_id"]] = CancelOutcome.CANCELLED.value
            continue
        todo.append(job["job_id"])
    limit = asyncio.Semaphore(CONCURRENCY)

    async def cancel(job_id: str) -> CancelOutcome:
        async with limit:
            reply = await end_job(
                redis, scripts, settings, job_id, customer=action.customer, now_ms=now_ms(), after_attempt=p["after_attempt"], via="bulk"
            )
            return reply.outcome

    done = dict.fromkeys(COUNTERS, 0)
    for job_id, outcome in zip(todo, await asyncio.gather(*(cancel(j) for j in todo))):
        done[_COUNTER_OF.get(outcome, "not_found")] += 1
        outcomes[job_id] = outcome.value
    counts = {name: counts[name] + done[name] for name in COUNTERS}
    cursor = decode(listed.next_cursor) if listed.next_cursor else None
    return StepResult(counts, sum(counts.values()), cursor, outcomes)


def view(action_id: str, record: dict[str, str]) -> dict[str, Any]:
    from .bulk import counters, progress

    counts = counters(record)
    return {"action_id": action_id, **progress(record), **{name: counts.get(name, 0) for name in COUNTERS}}

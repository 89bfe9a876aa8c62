"""Ending jobs that no attempt decides: cancelled (``DELETE /api/v1/jobs/{id}``) or expired (``start_before_ms``).

Both go through ``cancel.lua``, one call per job, atomically with every
place that would send it: the script makes the job final (``cancelled`` or
``expired``), takes its delayed entries and workflow timers out, drops its
admission count once and hands it to delivery (status ``cancelled`` /
``expired``). What still holds the job elsewhere lets it go on sight:
``start_attempt.lua`` refuses a final job (the pacing grant gives the
interval back), the stream readers skip it, and so do its raced copies in
other regions.

A job with an attempt in flight (``sending:<region>`` in its record) is not
cancelled (``in_flight``); with ``after_attempt`` it gets ``cancel_requested``
and ends ``cancelled`` when that attempt ends (``finish.lua``, ``requeue.lua``,
the attempt's result kept; an attempt that succeeds decides the job, and that
success stands).

Cancelling a job cancels what is pending below it in its workflow: children
live in their parent's partition, linked by ``child:<relation>``, so the tree
is read here and handed to the script whole; the script checks it did not
grow meanwhile (``stale``: read again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from . import keys
from .config import Settings
from .jobs import MAX_CHAIN_DEPTH
from .metrics import JOBS_CANCELLED, JOBS_EXPIRED
from .redisconn import Scripts

if TYPE_CHECKING:
    from .redisconn import RedisClient

SEND_BOUND_MARGIN_MS = 5000  # an attempt started longer ago than the attempt timeout plus this is a dead node's
MAX_TREE = 64  # jobs of one workflow tree read for one cancel (a chain is at most MAX_CHAIN_DEPTH deep)
_STALE_TRIES = 5


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"  # an attempt is in flight; the job ends cancelled when it ends
    IN_FLIGHT = "in_flight"
    ALREADY_FINAL = "already_final"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    NOT_DUE = "not_due"  # expire: started, final, or its deadline not reached


@dataclass(frozen=True)
class CancelReply:
    outcome: CancelOutcome
    children_cancelled: int = 0  # pending jobs below it in its workflow, cancelled
    children_requested: int = 0  # jobs below it with an attempt in flight: cancelled when it ends


async def _tree(redis: RedisClient, job_id: str, partition: int) -> list[str]:
    """The job and every job below it in its workflow (``child:<relation>`` links, all in its partition), the job first."""
    ids, frontier = [job_id], [job_id]
    for _depth in range(MAX_CHAIN_DEPTH + 2):
        if not frontier or len(ids) >= MAX_TREE:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for j in frontier:
                pipe.hgetall(keys.job(j))
            rows = await pipe.execute()
        frontier = [v for row in rows for k, v in sorted(row.items()) if k.startswith("child:") and keys.job_partition(v) == partition]
        ids += [j for j in frontier if j not in ids][: MAX_TREE - len(ids)]
    return ids


async def end_job(
    redis: RedisClient,
    scripts: Scripts,
    settings: Settings,
    job_id: str,
    *,
    customer: str,
    now_ms: int,
    after_attempt: bool = False,
    expire: bool = False,
    circuit_open: bool = False,
    via: str = "single",
) -> CancelReply:
    """Cancel a customer's job (and what is pending below it), or expire a job whose deadline passed (``expire``;
    with ``circuit_open``, its domain's circuit breaker held it: it ends ``failed``, error ``circuit_open``).

    Counted in ``ezt_jobs_cancelled_total{via}`` (``via``: single or bulk; a
    cancel requested with an attempt in flight as after_attempt) and
    ``ezt_jobs_expired_total``.
    """
    p = keys.job_partition(job_id)
    if p is None:
        return CancelReply(CancelOutcome.NOT_FOUND)
    mode = ("expire_circuit" if circuit_open else "expire") if expire else "after_attempt" if after_attempt else "cancel"
    bound_ms = int(settings.attempt_timeout_s * 1000) + SEND_BOUND_MARGIN_MS
    regions = list(settings.region_ids)
    for _ in range(_STALE_TRIES):
        tree = [job_id] if expire else await _tree(redis, job_id, p)
        reply = await scripts.cancel(
            keys=[
                keys.queued(p), keys.deliveries(p), keys.workflow_spawn(p), keys.delayed(p), keys.workflow_timers(p),
                *(k for j in tree for k in (keys.job(j), keys.attempts(j))),
            ],
            args=[mode, customer, now_ms, settings.job_ttl_s, bound_ms, keys.job_events(""), len(regions), *regions, *tree],
        )  # fmt: skip
        outcome, cancelled, requested = _parse(reply)
        if outcome != "stale":
            answer = CancelReply(CancelOutcome(outcome), cancelled, requested)
            _count(answer, via)
            return answer
    raise RuntimeError(f"the workflow below {job_id} kept growing while it was cancelled")


def _count(reply: CancelReply, via: str) -> None:
    if reply.outcome is CancelOutcome.CANCELLED:
        JOBS_CANCELLED.labels(via).inc()
    elif reply.outcome is CancelOutcome.CANCEL_REQUESTED:
        JOBS_CANCELLED.labels("after_attempt").inc()
    elif reply.outcome is CancelOutcome.EXPIRED:
        JOBS_EXPIRED.labels("start_before_passed").inc()
    if reply.children_cancelled:
        JOBS_CANCELLED.labels(via).inc(reply.children_cancelled)
    if reply.children_requested:
        JOBS_CANCELLED.labels("after_attempt").inc(reply.children_requested)


def _parse(reply: Sequence[object]) -> tuple[str, int, int]:
    outcome, cancelled, requested = reply
    text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    return text, int(str(cancelled)), int(str(requested))

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

from . import keys, storage
from .config import Settings
from .jobs import MAX_CHAIN_DEPTH
from .metrics import JOBS_CANCELLED, JOBS_EXPIRED
from .redisconn import Scripts
from .scripting import ScriptRun

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


class EndMode(StrEnum):
    """How ``cancel.lua`` ends a job."""

    CANCEL = "cancel"
    AFTER_ATTEMPT = "after_attempt"  # an attempt in flight: cancel once it ends
    EXPIRE = "expire"  # the deadline timer
    EXPIRE_CIRCUIT = "expire_circuit"  # the deadline timer while the domain's circuit is open: failed, circuit_open


async def end_tree(
    run: ScriptRun,
    partition: int,
    tree: Sequence[str],
    *,
    mode: EndMode,
    customer: str,
    regions: Sequence[str],
    now_ms: int,
    ttl_s: int,
    bound_ms: int,
) -> CancelReply | None:
    """``cancel.lua``: end ``tree`` (the job first, then what is below it, as read); None when the tree grew meanwhile.

    ``customer``: '' to expire; ``bound_ms``: an attempt started longer ago is a dead node's, not in flight.
    """
    reply = await run(
        keys=[
            keys.queued(partition), keys.deliveries(partition), keys.workflow_spawn(partition), keys.delayed(partition),
            keys.workflow_timers(partition), storage.kept_key(partition, ttl_s, now_ms),
            *(k for j in tree for k in (keys.job(j), keys.attempts(j))),
        ],
        args=[mode.value, customer, now_ms, ttl_s, bound_ms, keys.job_events(""), len(regions), *regions, *tree],
    )  # fmt: skip
    outcome, cancelled, requested = reply
    text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if text == "stale":
        return None
    return CancelReply(CancelOutcome(text), int(cancelled), int(requested))


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
    if expire:
        mode = EndMode.EXPIRE_CIRCUIT if circuit_open else EndMode.EXPIRE
    else:
        mode = EndMode.AFTER_ATTEMPT if after_attempt else EndMode.CANCEL
    bound_ms = int(settings.attempt_timeout_s * 1000) + SEND_BOUND_MARGIN_MS
    regions = list(settings.region_ids)
    for _ in range(_STALE_TRIES):
        tree = [job_id] if expire else await _tree(redis, job_id, p)
        answer = await end_tree(
            scripts.cancel,
            p,
            tree,
            mode=mode,
            customer=customer,
            regions=regions,
            now_ms=now_ms,
            ttl_s=settings.job_ttl_s,
            bound_ms=bound_ms,
        )
        if answer is not None:
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

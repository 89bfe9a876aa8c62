"""Typed calls of the webhook delivery scripts: each names its keys and arguments and answers a dataclass, an enum or a count.

A finished job's webhooks enter delivery through ``delivery_plan.lua`` (the
delivery service reads the deliveries stream) or ``delivery_claim.lua`` (the
edge that finished the job claims its hand-off); both write the plan of
``_webhook_plan.lua``. Each POST is recorded by ``delivery_record.lua``, or
put back for later by ``delivery_defer.lua`` when its host's pace
(``webhook_pace.lua``) says wait. ``delivery_release.lua`` moves due retries to
the send streams, ``delivery_sweep.lua`` takes over the hand-offs an edge did
not deliver in time, and ``delivery_replay.lua`` queues dead letters again.
The layout of the state is ``common/deliveries.py``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from . import keys
from .scripting import ScriptRun, answered


@dataclass(slots=True)
class PlannedHook:
    """One webhook as it enters delivery."""

    url: str
    vote: bool  # counts toward the quorum
    regions: Sequence[str]  # where it may be sent from (none: anywhere)
    route: str  # the send stream it is queued on ('' in a claim: the edge sends it itself)


@dataclass(slots=True)
class Plan:
    """A finished job's webhooks as ``_webhook_plan.lua`` writes them: every one pending, its window starting now."""

    job_id: str  # the webhooks' job (a fallback's step)
    customer: str
    quorum: int
    payload: bytes  # the JSON every webhook receives
    finished_ms: int
    status: str  # the job's final state
    hooks: Sequence[PlannedHook]
    now_ms: int
    ttl_s: int

    def hook_args(self) -> list[Any]:
        return [x for h in self.hooks for x in (h.url, 1 if h.vote else 0, ",".join(h.regions), h.route)]


async def plan(run: ScriptRun, p: Plan, *, stream: str, group: str, entry_id: str, routes: Sequence[str]) -> bool:
    """``delivery_plan.lua``: write the plan, queue a send per webhook on its route, acknowledge the deliveries entry.

    False when the job was planned before (its entry only acknowledged).
    """
    partition = keys.partition_of(p.job_id)
    planned = await run(
        keys=[keys.job_webhooks(p.job_id), stream, *(keys.delivery_sends(partition, r) for r in routes)],
        args=[
            group, entry_id, p.now_ms, p.ttl_s, p.customer, p.quorum, p.payload, p.finished_ms, p.status, p.job_id, len(p.hooks),
            *p.hook_args(), *routes,
        ],
    )  # fmt: skip
    return int(planned) == 1


def claim(run: ScriptRun, p: Plan, *, member: str, held_until_ms: int, node: str, routes: Sequence[str]) -> asyncio.Future[int]:
    """``delivery_claim.lua``: the edge claims the hand-off ``member`` (finish.lua's) and plans the webhooks.

    Answers how many webhooks the edge sends itself (those with no route);
    0 when none: none is the edge's, the delivery service swept the hand-off,
    or the job was planned already. A future (:func:`~.scripting.answered`).
    """
    partition = keys.partition_of(p.job_id)
    call = run(
        keys=[keys.delivery_handoff(partition), keys.job_webhooks(p.job_id), *(keys.delivery_sends(partition, r) for r in routes)],
        args=[
            member, p.now_ms, held_until_ms, p.ttl_s, p.customer, p.quorum, p.payload, p.finished_ms, p.status, p.job_id, len(p.hooks),
            node, *p.hook_args(), *routes,
        ],
    )  # fmt: skip
    return answered(call, lambda own: max(int(own), 0))


class Applied(IntEnum):
    GONE = -1  # the webhooks' state is gone
    ALREADY_FINAL = 0  # the webhook was delivered or dead already (a duplicate send): only the attempt counters moved
    APPLIED = 1


@dataclass(slots=True)
class PostRecord:
    """What one POST came to, as ``delivery_record.lua`` records it."""

    job_id: str
    customer: str
    hook: int  # the webhook's index
    action: str  # delivered | retry | dead
    status_code: int | None
    error: str
    due_ms: int  # a retry's next send
    route: str  # a retry's send stream
    reason: str  # a dead letter's
    node: str
    region: str  # '' for none


@dataclass(slots=True)
class Recorded:
    applied: Applied
    quorum_met_now: bool  # this POST's vote made the quorum
    job_finished_ms: int | None

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Recorded:
        applied, quorum_now, finished_ms = reply
        return cls(Applied(int(applied)), int(quorum_now) == 1, int(finished_ms) if finished_ms else None)


def record(
    run: ScriptRun,
    o: PostRecord,
    *,
    stream: str,
    group: str,
    entry_id: str,
    now_ms: int,
    handoff: str = "",
    plan: Plan | None = None,
) -> asyncio.Future[Recorded]:
    """``delivery_record.lua``: record the outcome, then acknowledge the send entry (``entry_id``; '' for none);
    ``handoff``: a member of the partition's hand-off set to remove in the same step (the edge's only webhook
    of a job). ``plan`` (with ``handoff``): that webhook was POSTed before it was claimed; its plan is written
    first, unless the delivery service swept the hand-off meanwhile (then nothing is: ``Applied.GONE``).
    A future (:func:`~.scripting.answered`)."""
    partition = keys.partition_of(o.job_id)
    planned: list[Any] = []
    if plan is not None:
        assert handoff and len(plan.hooks) == 1, "a plan goes with its hand-off, for the job's only webhook"
        hook = plan.hooks[0]
        planned = [
            plan.now_ms, plan.ttl_s, plan.customer, plan.quorum, plan.payload, plan.finished_ms, plan.status,
            hook.url, 1 if hook.vote else 0, ",".join(hook.regions),
        ]  # fmt: skip
    call = run(
        keys=[
            keys.job_webhooks(o.job_id), stream, keys.delivery_scheduled(partition), keys.delivery_dead(partition),
            keys.delivery_dead(partition, o.customer), *((keys.delivery_handoff(partition),) if handoff else ()),
        ],
        args=[
            group, entry_id, o.hook, o.action, now_ms, "" if o.status_code is None else o.status_code, o.error, o.due_ms,
            f"{o.route}|{o.job_id}|{o.hook}", o.reason, o.node, o.region, o.job_id, keys.job_events(o.job_id),
            *((handoff,) if handoff else ()), *planned,
        ],
    )  # fmt: skip
    return answered(call, Recorded.parse)


async def defer(
    run: ScriptRun, job_id: str, hook: int, *, route: str, due_ms: int, stream: str, group: str, entry_id: str, edge: bool
) -> None:
    """``delivery_defer.lua``: put a send back for ``due_ms`` without an attempt (scheduled on ``route``, its entry acknowledged).

    ``edge``: an edge's first attempt (no send entry); the webhook is no longer the edge's.
    """
    partition = keys.partition_of(job_id)
    member = f"{route}|{job_id}|{hook}"
    if edge:
        await run(keys=[stream, keys.delivery_scheduled(partition), keys.job_webhooks(job_id)], args=[group, "", due_ms, member, hook])
    else:
        await run(keys=[stream, keys.delivery_scheduled(partition)], args=[group, entry_id, due_ms, member])


async def pace(run: ScriptRun, customer: str, domain: str, *, now_ms: int | None = None, rps: float, burst: int) -> int:
    """``webhook_pace.lua``: 0 when ``customer``'s POST to ``domain`` (host:port) may go now (counted),
    else the ms to wait (nothing counted). ``now_ms`` None: the Redis server's clock (every sender's)."""
    return int(await run(keys=[keys.webhook_pace(customer, domain)], args=["" if now_ms is None else now_ms, 1000.0 / rps, burst]))


async def release(run: ScriptRun, partition: int, routes: Sequence[str], *, now_ms: int, most: int) -> int:
    """``delivery_release.lua``: move the partition's due retries onto their routes' send streams; how many moved."""
    moved = await run(
        keys=[keys.delivery_scheduled(partition), *(keys.delivery_sends(partition, r) for r in routes)], args=[now_ms, most, *routes]
    )
    return int(moved)


async def sweep(run: ScriptRun, partition: int, member: str, routes: Sequence[str], *, now_ms: int) -> bool:
    """``delivery_sweep.lua``: take over a hand-off whose time has passed; False when it was left alone (not due, or gone)."""
    swept = await run(
        keys=[
            keys.delivery_handoff(partition), keys.job_webhooks(member.partition("|")[0]), keys.deliveries(partition),
            *(keys.delivery_sends(partition, r) for r in routes),
        ],
        args=[member, now_ms, *routes],
    )  # fmt: skip
    return int(swept) > 0


async def replay(
    run: ScriptRun, job_id: str, customer: str, routes: Sequence[str], *, now_ms: int, ttl_s: int, window_ms: int
) -> int | None:
    """``delivery_replay.lua``: queue the job's dead webhooks again (``routes``: each webhook's, by index); how many.

    None when the webhooks' state is gone.
    """
    partition = keys.partition_of(job_id)
    replayed = await run(
        keys=[
            keys.job_webhooks(job_id),
            keys.delivery_scheduled(partition),
            keys.delivery_dead(partition),
            keys.delivery_dead(partition, customer),
        ],
        args=[now_ms, ttl_s, job_id, window_ms, *routes],
    )
    return None if int(replayed) < 0 else int(replayed)

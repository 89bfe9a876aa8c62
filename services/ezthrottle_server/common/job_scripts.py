"""Typed calls of the job path's scripts: each names its keys and arguments and answers a dataclass or an enum.

``submit.lua`` / ``accept.lua`` (a submission), ``start_attempt.lua`` (an
attempt begins), ``finish.lua`` (the job's result in one region) and ``requeue.lua``
(the next attempt, here, elsewhere or later); the coordinator's
``release_delayed.lua`` (delayed work that is due), ``repair.lua`` (a job
held by nothing) and ``evacuate.lua`` (a job leaves a down region). The
scripts' own comments say
what they do; this module says how to call them, once. ``run`` is how the
script goes to Redis: ``scripts.finish`` itself, or a batcher's
``functools.partial(batch.script, scripts.finish)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

import orjson

from . import job_index, keys, storage
from .scripting import ScriptRun, answered

# -- submit.lua / accept.lua ---------------------------------------------------


class Submitted(IntEnum):
    """What a submission's script did."""

    DUPLICATE = 0  # a job with the same idempotent key exists: nothing written
    CREATED = 1
    QUOTA_SPENT = 2  # the customer's monthly quota: nothing written
    QUEUE_FULL = 3  # the customer's ceiling of jobs not yet final: nothing written
    BYTES_FULL = 4  # the customer's byte budget (common/storage.py): nothing written


_SUBMITTED = {int(s): s for s in Submitted}  # a dict lookup each submission, not the enum's call


@dataclass(slots=True)
class SubmitReply:
    submitted: Submitted
    job_id: str  # the new job's, or the existing one's for a duplicate
    lease: str  # accept.lua's lease on the job ('' when it took none)
    bytes: int = 0  # the new job's record, as counted against the customer's byte budget (common/storage.py)

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> SubmitReply:
        submitted = _SUBMITTED[int(reply[0])]
        if submitted is not Submitted.CREATED:
            return cls(submitted, str(reply[1] or ""), "")
        return cls(submitted, str(reply[1] or ""), str(reply[2] or ""), int(reply[3]) if len(reply) > 3 else 0)


@dataclass(slots=True)
class Submission:
    """Everything ``submit.lua`` writes for one new job."""

    job_id: str
    customer: str
    digest: str  # of the customer and the idempotent key (common.jobs.key_digest)
    month: str
    fields: Mapping[str, Any]  # the record (common.jobs.record_fields)
    streams: Sequence[str]  # regions whose stream gets an entry (none when the job is taken at once)
    timers: Sequence[tuple[int, str]]  # (due ms, kind) of its workflow timers
    due_ms: int  # 0: now
    now_ms: int
    idempotency_ttl_s: int
    usage_ttl_s: int
    quota_left: int  # in this partition, -1: no cap
    queued_left: int  # in this partition, -1: no ceiling
    domain: str  # of its url (host:port), for the customer's job index
    index_ttl_s: int  # job_index.ttl_s
    bytes_left: int = -1  # bytes the customer may still add in this partition (common/storage.py), -1: no budget
    bytes_ended: int = 0  # the partition's count of the customer's ended bytes when bytes_left was worked out

    def keys(self) -> list[str]:
        p = keys.partition_of(self.job_id)
        return [
            keys.idempotency(p, self.customer, self.digest),
            keys.job(self.job_id),
            keys.delayed(p),
            keys.usage(p, self.customer, self.month),
            keys.queued(p),
            keys.job_index(p, self.customer),
            *(keys.region_stream(p, r) for r in self.streams),
            keys.workflow_timers(p),
        ]

    def args(self) -> list[Any]:
        flat = [x for kv in self.fields.items() for x in kv]
        timers = [x for due, kind in self.timers for x in (due, kind)]
        return [
            self.job_id, self.idempotency_ttl_s, self.due_ms, self.now_ms, self.quota_left, self.usage_ttl_s,
            self.customer, self.queued_left, len(self.fields),
            job_index.member(self.now_ms, self.job_id, self.domain), self.index_ttl_s, job_index.too_old(self.now_ms, self.index_ttl_s),
            self.bytes_left, self.bytes_ended, *flat, *self.streams, *timers,
        ]  # fmt: skip


async def submit(run: ScriptRun, submission: Submission) -> SubmitReply:
    """``submit.lua``: write the job (or find its duplicate)."""
    return SubmitReply.parse(await run(keys=submission.keys(), args=submission.args()))


async def submit_and_take(run: ScriptRun, submission: Submission, take_keys: Sequence[str], take_args: Sequence[Any]) -> SubmitReply:
    """``accept.lua`` (one Redis only): ``submit.lua`` that also leases the job from its scope when it creates it."""
    submit_keys, submit_args = submission.keys(), submission.args()
    reply = await run(keys=[*submit_keys, *take_keys], args=[len(submit_keys), len(submit_args), *submit_args, *take_args])
    return SubmitReply.parse(reply)


# -- start_attempt.lua -------------------------------------------------------------


@dataclass(slots=True)
class JobState:
    """The job as an attempt starts it (``start_attempt.lua``'s answer), parsed once."""

    state: str
    spec: dict[str, Any]
    retries: int  # in this region
    reroutes: int
    created_ms: int | None
    mode: str  # race or fanout
    tried: str  # comma list of the regions tried
    unsafe: bool  # a POST/PATCH without Idempotency-Key
    live: int  # regions still trying it
    idempotent_key: str | None
    ended_here: str = ""  # why start_attempt.lua ended the job in this call (start_before_passed, cancelled), else ""

    FINAL = frozenset({"success", "failed", "cancelled", "expired"})
    ENDED_UNSENT = frozenset({"cancelled", "expired"})  # start_attempt.lua may end a job so: nothing was sent

    @property
    def final(self) -> bool:
        return self.state in self.FINAL

    @property
    def fanout(self) -> bool:
        return self.mode == "fanout"

    @classmethod
    def parse(cls, reply: Sequence[Any] | None) -> JobState | None:
        """None when the job is gone."""
        if not reply:
            return None
        state, spec, retries, reroutes, created, mode, tried, unsafe, live, idem, *ended = reply
        return cls(
            state=state,
            spec=orjson.loads(spec) if spec else {},
            retries=int(retries or 0),
            reroutes=int(reroutes or 0),
            created_ms=int(created) if created else None,
            mode=mode or "race",
            tried=tried or "",
            unsafe=unsafe == "1",
            live=int(live or 1),
            idempotent_key=idem or None,
            ended_here=ended[0] if ended else "",
        )


def start_attempt(run: ScriptRun, job_id: str, region: str, now_ms: int, ttl_s: int) -> Awaitable[Any]:
    """``start_attempt.lua``: mark the job running here; its answer parses with :meth:`JobState.parse`.

    A job whose cancel was requested, or not started by its ``start_before_ms``,
    ends there instead (``cancelled`` / ``expired``: a final state answered).
    Not a coroutine: a taken job's send does not wait for it (edge/attempt.py).
    """
    p = keys.partition_of(job_id)
    return run(
        keys=[
            keys.job(job_id),
            keys.attempts(job_id),
            keys.queued(p),
            keys.deliveries(p),
            keys.workflow_spawn(p),
            storage.kept_key(p, ttl_s, now_ms),
        ],
        args=[now_ms, region, keys.job_events(job_id), ttl_s, job_id],
    )


# -- finish.lua ----------------------------------------------------------------------


class FinishKind(str, Enum):
    SUCCESS = "success"  # a definitive answer, the same from any region
    FAILED = "failed"
    OUT = "out"  # this region has no tries left: the job fails only when no region is left


class Finished(IntEnum):
    GONE = -1
    LOST = 0  # already decided by another region: the attempt is kept, marked lost
    DECIDED = 1
    REGION_OUT = 2  # the job goes on in other regions


@dataclass(slots=True)
class RegionResult:
    """The job's result in one region, as ``finish.lua`` records it."""

    job_id: str
    region: str
    kind: FinishKind
    result: dict[str, Any] | None  # {status_code, headers, body[, truncated]}, or None without an answer
    attempt: dict[str, Any] | None  # the attempts list's entry, or None
    reason: str  # the failure reason ('' on success)
    group: str  # the region's consumer group
    entry_id: str = ""  # a stream entry it acknowledges


@dataclass(slots=True)
class FinalRecord:
    """What ``finish.lua`` answers the edge that decided a job and took its own webhooks' hand-off, with what
    the edge sent it: the final record as far as the webhooks' payload reads it (``build_payload``), so that
    the edge need not read the job back."""

    record: dict[str, str]  # as HGETALL would read it now: state, result, winner, finished_ms, error, and FIELDS
    attempts: int  # the attempts list's length

    FIELDS = ("customer", "idempotent_key", "chain", "parent", "root", "relation")  # finish.lua's facts, in order

    @classmethod
    def parse(cls, facts: Sequence[Any], result_json: bytes, region: str, finished_ms: int) -> FinalRecord | None:
        if not facts:
            return None
        state, error, attempts, *rest = facts
        record = {n: str(v) for n, v in zip(cls.FIELDS, rest) if v is not None}
        record.update(state=str(state), result=result_json.decode(), winner=region, finished_ms=str(finished_ms))
        if error:
            record["error"] = str(error)
        return cls(record, int(attempts))


async def finish(run: ScriptRun, result: RegionResult, *, now_ms: int, ttl_s: int) -> Finished:
    """``finish.lua``; the job's webhooks (if it decided the job) go to the delivery stream."""
    return (await finish_handing_off(run, result, now_ms=now_ms, ttl_s=ttl_s, grace_ms=0))[0]


def finish_handing_off(
    run: ScriptRun, result: RegionResult, *, now_ms: int, ttl_s: int, grace_ms: int
) -> asyncio.Future[tuple[Finished, list[str], FinalRecord | None]]:
    """``finish.lua``; with ``grace_ms`` > 0 the job's webhooks are handed to the caller: the hand-off members
    it must claim (edge/webhooks.py), each taken by the delivery service after ``grace_ms`` if it does not,
    and (its own hand-off first, not a fanout's) what its payload is built from.
    A future (:func:`~.scripting.answered`)."""
    p = keys.partition_of(result.job_id)
    result_json = orjson.dumps(result.result)
    call = run(
        keys=[
            keys.job(result.job_id), keys.attempts(result.job_id), keys.region_stream(p, result.region),
            keys.deliveries(p), keys.workflow_spawn(p), keys.queued(p), keys.delivery_handoff(p), storage.kept_key(p, ttl_s, now_ms),
        ],
        args=[
            result.group, result.entry_id, result.kind.value, result_json, result.region, now_ms,
            orjson.dumps(result.attempt) if result.attempt is not None else "", ttl_s, result.job_id, result.reason,
            keys.job_events(result.job_id), grace_ms,
        ],
    )  # fmt: skip
    return answered(call, lambda reply: _finished(reply, result_json, result.region, now_ms))


def _finished(reply: Any, result_json: bytes, region: str, now_ms: int) -> tuple[Finished, list[str], FinalRecord | None]:
    if isinstance(reply, list):
        return Finished(int(reply[0])), [str(m) for m in reply[1]], FinalRecord.parse(reply[2], result_json, region, now_ms)
    return Finished(int(reply)), [], None


# -- requeue.lua -------------------------------------------------------------------


class RequeueKind(str, Enum):
    RETRY = "retry"  # the same region
    REROUTE = "reroute"  # another region
    DEFER = "defer"  # nothing was sent (another region holds the send lease)


class Requeued(IntEnum):
    GONE = -1
    FINAL = 0
    QUEUED = 1


@dataclass(slots=True)
class NextAttempt:
    job_id: str
    region: str  # the region that tried
    next_region: str
    kind: RequeueKind
    due_ms: int
    attempt: dict[str, Any] | None  # None for a deferral that sent nothing
    group: str
    result: dict[str, Any] | None = None  # the attempt's answer: kept if the job's cancel was requested meanwhile


async def requeue(run: ScriptRun, nxt: NextAttempt, *, now_ms: int, ttl_s: int) -> Requeued:
    """``requeue.lua``: queue the next attempt (or end the job cancelled, its cancel requested during this one)."""
    p = keys.partition_of(nxt.job_id)
    reply = await run(
        keys=[
            keys.job(nxt.job_id), keys.attempts(nxt.job_id), keys.region_stream(p, nxt.region), keys.delayed(p),
            keys.region_stream(p, nxt.next_region), keys.queued(p), keys.deliveries(p), keys.workflow_spawn(p),
            storage.kept_key(p, ttl_s, now_ms),
        ],
        args=[
            nxt.group, "", orjson.dumps(nxt.attempt) if nxt.attempt is not None else "", nxt.kind.value, nxt.next_region,
            nxt.due_ms, now_ms, nxt.job_id, nxt.region, keys.job_events(nxt.job_id),
            orjson.dumps(nxt.result) if nxt.result is not None else "", ttl_s,
        ],
    )  # fmt: skip
    return Requeued(int(reply))


# -- release_delayed.lua, repair.lua, evacuate.lua (the coordinator's) -----------------


@dataclass(frozen=True)
class Swept:
    """What a sweep of a set of due entries did (``release_delayed.lua``, ``fire_timers.lua``)."""

    moved: int  # ``most`` at the most: a backlog when it is reached
    next_ms: int | None  # when the set's first entry left is due (None: the set is empty)

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Swept:
        return cls(int(reply[0]), int(float(reply[1])) if len(reply) > 1 and reply[1] is not None else None)


async def release_delayed(run: ScriptRun, partition: int, regions: Sequence[str], *, now_ms: int, most: int) -> Swept:
    """``release_delayed.lua``: move the partition's due delayed entries (``<region>|<job id>``) into their regions' streams."""
    reply = await run(
        keys=[keys.delayed(partition), *(keys.region_stream(partition, r) for r in regions)],
        args=[now_ms, most, keys.job_events(""), *regions],
    )
    return Swept.parse(reply)


@dataclass(frozen=True)
class Unheld:
    """A job found held by nothing (common/repair.py), as it was seen."""

    job_id: str
    state: str
    attempts: int  # the length of its attempts list
    repairs: str  # its ``repairs`` field as read ('0' when absent)


async def repair(run: ScriptRun, job: Unheld, regions: Sequence[str], *, now_ms: int) -> bool:
    """``repair.lua``: queue the job again in ``regions`` if it is still as seen; False when it moved meanwhile."""
    p = keys.partition_of(job.job_id)
    done = await run(
        keys=[keys.job(job.job_id), keys.attempts(job.job_id), *(keys.region_stream(p, r) for r in regions)],
        args=[job.job_id, now_ms, keys.job_events(job.job_id), job.state, job.attempts, job.repairs, *regions],
    )
    return int(done) == 1


class Evacuated(IntEnum):
    NOT_THERE = 0  # final, gone, or already gone from the region (a second holder of it there)
    MOVED = 1  # queued in the target region's stream, counted as a reroute
    DROPPED = 2  # a raced job another region carries: only this region's copy is gone


async def evacuate(run: ScriptRun, job_id: str, *, region: str, entry_id: str, target: str, now_ms: int, maybe_sent: bool) -> Evacuated:
    """``evacuate.lua``: move a job out of a down ``region`` (its stream entry ``entry_id``, '' if none) to ``target``.

    ``maybe_sent``: an attempt may have reached the target (its lease expired with its node).
    """
    p = keys.partition_of(job_id)
    reply = await run(
        keys=[keys.job(job_id), keys.region_stream(p, region), keys.region_stream(p, target)],
        args=[keys.edge_group(region), entry_id, region, target, now_ms, job_id, keys.job_events(job_id), "1" if maybe_sent else ""],
    )
    return Evacuated(int(reply))

"""The edge's job loop: admit jobs from the region's streams, send them as their domains allow.

Two halves, joined through Redis (see :mod:`ezthrottle_server.pacing`):

**Admission.** Each partition's stream of the region is read through the
consumer group ``edge-<region>``. Each entry's job is parked in the queue of
its pacing scope (its target domain, or the domain and its customer), and
only then is the entry acknowledged. A node killed in between leaves the
entry pending: a live node of the region claims it after the visibility
timeout (XAUTOCLAIM) and admits it again, which is idempotent. Reading never
waits for send slots, since a parked job holds none, so a backlog for one
domain never stalls the stream behind it.

**Sending.** The node's :class:`~ezthrottle_server.pacing.scheduler.Scheduler`
grants it jobs of due scopes, never more than its free send slots
(``executor_concurrency``). Each granted job runs ``start_attempt.lua`` →
executor → ``retry.decide`` → ``finish.lua`` (final) or ``requeue.lua``
(retry through the delayed set or the stream, reroute to another region's
stream), then ``release.lua`` tells the domain's limit what the answer said
(rate headers, a ``Retry-After`` pause). A granted job is leased: the node
renews its leases while it works, so nobody takes a job from a live node
however long it takes; a dead node's leases expire and the next grant on the
scope puts its jobs back at the front of the queue. A node that stops
gracefully puts back at once what it could not finish.

**The fast path.** A job accepted for this region alone, due now, whose
scope is idle (nothing waits in any region, the rate and the node's cap
allow a send) is leased by the accepting node as it is written: on one
Redis in the submission's own script (``accept.lua``, ``submit.lua`` with
``take.lua``'s logic, :meth:`RegionWorker.plan_take`), on a cluster one round
trip before it (:meth:`RegionWorker.take_at_once`). Taken, it gets no stream
entry, and the node sends it as soon as the submission answers
(:meth:`RegionWorker.send_taken`). That is what the two halves would
have done, minus three round trips and two hand-overs; the lease holds the
job exactly as a grant's does (a dead node's lease expires, the scope is
indexed in the ready set by that expiry, and the next grant recovers the
job). A duplicate or refused submission takes nothing (on a cluster, gives
the lease and its emission interval back).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..common import keys
from ..common.batching import Batcher
from ..common.config import Settings
from ..common.metrics import (
    RACE_LOSSES,
    RACE_WINS,
    ATTEMPT_LATENCY,
    ATTEMPTS,
    ACCEPT_TO_SEND,
    ATTEMPT_CRASHES,
    INFLIGHT,
    JOBS_FINISHED,
    PACING_LATE_SENDS,
    PACING_PAUSES,
    PACING_WAIT,
    RECLAIMED,
    ROUTING_LATENCY,
)
from ..common.redisconn import UNAVAILABLE, Scripts
from ..common.streams import GroupConsumer
from ..pacing.hints import PAUSING_STATUSES, TargetHints, read_hints
from ..pacing.limiter import Limiter, PacingPolicy, job_of
from ..pacing.scheduler import Scheduler
from ..pacing.scope import Scope, domain_of
from .executor import CONNECTION, TIMEOUT, Executor, Outcome
from .outcomes import OutcomeWindow
from .racing import outcome_kind, reroute_target, send_headers
from .retry import FAILED, REROUTE, RETRY, SUCCESS, Decision, backoff_s, decide, retry_after_s

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"success", "failed"})
ACCEPTED_HINTS = 4096  # jobs this node's API just accepted, remembered until its reader parks them
SEND_LEASE_MARGIN_MS = 5000  # a send lease outlives the attempt timeout by this much
MAX_CRASHES = 3  # attempts of one job that raise unexpectedly before the job fails with internal_error
NO_TAKE_S = 0.05  # after take.lua said no for a scope, accepted jobs take the usual way this long


@dataclass(frozen=True)
class Taken:
    """A lease ``take.lua`` gave a job this node is accepting (see :meth:`RegionWorker.take_at_once`)."""

    scope: Scope
    lease: str


@dataclass(frozen=True)
class TakePlan:
    """A send slot held for a job accepted on one Redis, and what accept.lua needs to take it (see plan_take)."""

    scope: Scope
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True)
class FirstSend:
    """What the first attempt of a job this node just accepted needs, known without reading the record."""

    spec: dict[str, Any]
    idempotent_key: str
    created_ms: int
    mode: str
    tried: str
    accepted_at: float  # time.perf_counter() when submit.lua answered


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status_class(outcome: Outcome) -> str:
    if outcome.status_code is None:
        return outcome.error_kind or "error"
    return f"{outcome.status_code // 100}xx"


class RegionWorker:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        scripts: Scripts,
        executor: Executor,
        outcomes: OutcomeWindow | None = None,
    ) -> None:
        assert settings.region is not None
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.batch = Batcher(redis)  # the per-job scripts of concurrent sends, one pipeline per loop turn
        self.executor = executor
        self.outcomes = outcomes
        # Region states for reroutes (set by the app: the coordinator's published view).
        self.region_states: Callable[[], Awaitable[dict[str, str]]] | None = None
        self.region = settings.region
        self.group = keys.edge_group(self.region)
        self.consumer = settings.node_id
        self.streams = [keys.region_stream(p, self.region) for p in range(settings.partitions)]
        self.policy = PacingPolicy.from_settings(settings)
        self.limiter = Limiter(redis, self.policy, self.region, settings.region_ids, batch=self.batch)
        self.scheduler = Scheduler(
            self.limiter,
            self._on_grant,
            capacity=settings.executor_concurrency,
            lease_ms=settings.visibility_timeout_ms,
        )
        self.reader = GroupConsumer(redis, self.group, self.consumer, settings.visibility_timeout_ms)  # entries held until acknowledged
        self._accepted: dict[str, tuple[str, str]] = {}  # job id -> (customer, domain), see accepting()
        self._first_sends: dict[str, FirstSend] = {}  # taken jobs between their grant and their attempt
        self._no_take: dict[Scope, float] = {}  # scope -> monotonic time until which take_at_once skips it
        self._tasks: set[asyncio.Task[None]] = set()
        self._admissions: set[asyncio.Future[None]] = set()  # see _admit_to_the_end
        self._side: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._pacing: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def ensure_groups(self) -> None:
        await self.reader.ensure_groups(self.streams)

    async def start(self) -> None:
        await self.ensure_groups()
        for stream in self.streams:
            self._loops.append(asyncio.create_task(self._read_loop(stream), name=f"read:{stream}"))
        self._loops.append(asyncio.create_task(self._keep_and_reclaim_loop(), name="reclaim"))
        self._pacing.append(asyncio.create_task(self.scheduler.run(), name="pacing"))
        self._pacing.append(asyncio.create_task(self.scheduler.keep_leases(), name="leases"))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking work, let sends in flight finish for ``grace_s``, then cancel them.

        Safe to call twice. A cancelled send's job goes back to the front of
        its queue for another node. Entries this node read but had not
        admitted (a reader cancelled halfway, or a reply still on its way)
        are admitted before it leaves, so they need not wait out the
        visibility timeout for another node to reclaim them.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.scheduler.stop()
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._admissions:  # admissions run to their end: a grant they made goes to a send
            await asyncio.gather(*self._admissions, return_exceptions=True)
        await self._admit_own_pending()
        if self._pacing:  # the scheduler's loop ends at its next wake-up
            await asyncio.gather(self._pacing[0], return_exceptions=True)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._side:
            await asyncio.wait(self._side, timeout=1.0)
        for t in self._pacing:  # leases are kept until the last send is over
            t.cancel()
        await asyncio.gather(*self._pacing, return_exceptions=True)

    @property
    def inflight(self) -> int:
        return self.scheduler.inflight

    # -- admission -----------------------------------------------------------

    def accepting(self, job_id: str, customer: str, domain: str) -> None:
        """This node's API is about to queue ``job_id`` in this region's stream.

        Its reader may then park the job without reading the record back (one
        round trip less between accept and send). Only a hint: an entry
        without one, or read by another node, is parked from the record; a
        job that ended meanwhile is skipped at its grant (``start_attempt``).
        Bounded: the oldest hints go first (a refused or duplicate submission
        leaves one behind).
        """
        if len(self._accepted) >= ACCEPTED_HINTS:
            del self._accepted[next(iter(self._accepted))]
        self._accepted[job_id] = (customer, domain)

    @property
    def takes_in_submission(self) -> bool:
        """One Redis: the submission itself takes the job (accept.lua, :meth:`plan_take`);
        a cluster takes it first (:meth:`take_at_once`)."""
        return self.limiter.accept_script is not None

    def plan_take(self, customer: str, domain: str) -> TakePlan | None:
        """On one Redis: hold a send slot for a job about to be accepted, for accept.lua to take it.

        ``submit.lua`` composed with ``take.lua`` (``pacing.limiter.compose_accept``)
        asks the scope once the job is known to be new and allowed; with a
        lease it writes no stream entry. One round trip for both, and a
        duplicate or refused submission takes nothing. None as for
        :meth:`take_at_once`; every plan ends in :meth:`planned`.
        """
        held = self._hold_take_slot(customer, domain)
        if held is None:
            return None
        scope, inflight = held
        args = self.limiter.take_args(scope, customer, inflight=inflight, lease_ms=self.scheduler.lease_ms)
        return TakePlan(scope, self.limiter.take_keys(scope), args)

    def planned(self, job_id: str, plan: TakePlan, lease: str | None) -> Taken | None:
        """accept.lua answered (``lease``: None when it took nothing, or its answer never came)."""
        if lease:
            self._accepted.pop(job_id, None)  # no stream entry for the reader to find
            return Taken(plan.scope, lease)
        self.scheduler.end_take(plan.scope, None)
        self._skip_takes(plan.scope)
        return None

    def _hold_take_slot(self, customer: str, domain: str) -> tuple[Scope, int] | None:
        """The job's scope and this node's sends in flight for it, with a send slot held; None: no fast path."""
        scope = self.limiter.cached_scope(domain, customer)
        if scope is None or self._no_take.get(scope, 0.0) > time.monotonic():
            return None
        inflight = self.scheduler.reserve_take(scope)
        return None if inflight is None else (scope, inflight)

    def _skip_takes(self, scope: Scope) -> None:
        if len(self._no_take) > 10_000:
            self._no_take.clear()
        self._no_take[scope] = time.monotonic() + NO_TAKE_S

    async def take_at_once(self, job_id: str, customer: str, domain: str) -> Taken | None:
        """Lease a job this node is about to accept, if its scope would grant it at once anyway.

        The fast path from accept to send (``pacing/scripts/take.lua``): the
        caller then writes the job with ``submit.lua`` *without* a stream
        entry, and the lease alone holds it, as a granted job is held: should
        this node die, the lease expires and the next grant on the scope (the
        ready set is indexed by the lease's expiry in the same round trip)
        puts the job at the front of its queue. The job goes from its
        acceptance to its send with no stream read, no admission and no
        ``start_attempt`` wait (:meth:`send_taken`).

        None (nothing held) when the job should take the usual way: the
        scope's mode not known here, no free send slot, a grant for the scope
        in flight, or the scope said no a moment ago (something waits, the
        rate or the node's cap is reached, a pause). Every Taken ends in
        :meth:`send_taken`.
        """
        held = self._hold_take_slot(customer, domain)
        if held is None:
            return None
        scope, inflight = held
        lease: str | None = None
        try:
            lease_ms = self.scheduler.lease_ms
            watch = self.limiter.watch_lease(scope, _now_ms() + lease_ms)  # the take joins this pipeline
            try:
                lease = await self.limiter.take(scope, job_id, customer, inflight=inflight, lease_ms=lease_ms)
            except Exception:
                # A lost reply may have left the lease (always "<job>@0"): give it back, the job takes the usual way.
                log.warning("take failed; the job takes the usual way", exc_info=True)
                self._background(self.limiter.release(scope, f"{job_id}@0", refund=True))
            try:
                await watch
            except Exception:  # only the index for a crash; the lease is released as usual
                log.warning("could not index a taken lease's expiry", exc_info=True)
        finally:
            if lease is None:
                self.scheduler.end_take(scope, None)
                self._skip_takes(scope)
        return Taken(scope, lease) if lease is not None else None

    def send_taken(self, job_id: str, taken: Taken, created: bool | None, first: FirstSend | None = None) -> None:
        """What became of a taken job's submission: ``created`` sends it now (``first`` says how),
        False (a duplicate, or refused) gives the lease and its rate back, None (unknown: the
        submission failed, the job may exist) leaves the lease to expire, which recovers the
        job if there is one."""
        if created and first is not None:
            self._first_sends[job_id] = first
            self.scheduler.end_take(taken.scope, taken.lease)  # -> _on_grant: the send starts now
            return
        self.scheduler.end_take(taken.scope, None)
        if created is False:
            self._background(self.limiter.release(taken.scope, taken.lease, refund=True))

    async def _read_loop(self, stream: str) -> None:
        while not self._stopping.is_set():
            try:
                reply = await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: ">"}, count=self.settings.read_batch, block=1000
                )
                for _stream, entries in reply or ():
                    await self._admit_to_the_end(stream, entries)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us: recreate
                    await self.ensure_groups()
                    continue
                log.exception("reading %s failed", stream)
                await asyncio.sleep(0.5)
            except UNAVAILABLE:  # also a cluster failing over
                log.warning("redis unavailable while reading %s; retrying", stream, exc_info=True)
                await asyncio.sleep(0.5)

    async def _admit(self, stream: str, entries: list[tuple[str, dict[str, str]]], *, reclaimed: bool = False) -> None:
        """Park each entry's job in its scope's queue, then acknowledge the entries.

        ``reclaimed``: entries a node read but never acknowledged (it died, or
        stopped halfway). It may have parked their jobs already, and they may
        have been sent since: see :meth:`_still_needed`.
        """
        for entry_id, fields in entries:
            self.reader.hold(stream, entry_id, fields.get("job", ""))
        try:
            jobs = [(fields.get("job", ""), entry_id) for entry_id, fields in entries]
            valid = [j for j, _ in jobs if keys.job_partition(j) is not None]
            for j, entry_id in jobs:
                if keys.job_partition(j) is None:
                    log.error("malformed stream entry %s on %s; dropping", entry_id, stream)
            hinted = {j: self._accepted.pop(j) for j in valid if j in self._accepted}
            unknown = [j for j in valid if j not in hinted]
            async with self.redis.pipeline(transaction=False) as pipe:
                for j in unknown:
                    pipe.hmget(keys.job(j), "customer", "spec", "state")
                rows = dict(zip(unknown, await pipe.execute())) if unknown else {}
            parked: list[tuple[str, str, str]] = []  # job id, domain, customer
            for job_id in valid:
                if job_id in hinted:
                    customer, domain = hinted[job_id]
                    parked.append((job_id, domain, customer))
                    continue
                customer, spec, state = rows[job_id]
                if state is None or state in FINAL_STATES:
                    continue  # gone, or another region already won: nothing to send
                try:
                    domain = domain_of(orjson.loads(spec)["url"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.error("job %s has no usable url; dropping its entry", job_id, extra={"job_id": job_id, "region": self.region})
                    continue
                parked.append((job_id, domain, customer or ""))
            scopes = await self.limiter.scopes_for((d, c) for _, d, c in parked)
            if reclaimed:
                parked = await self._still_needed(parked, scopes, {j: entry_id for j, entry_id in jobs})
            by_scope: dict[Scope, list[tuple[str, str]]] = defaultdict(list)
            for job_id, domain, customer in parked:
                by_scope[scopes[(domain, customer)]].append((job_id, customer))
            for scope, pairs in by_scope.items():
                await self.scheduler.admit(scope, pairs)  # and, with room here, takes what may go now
            ids = [entry_id for entry_id, _ in entries]
            acked = self.batch.execute("XACK", stream, self.group, *ids)
            deleted = self.batch.execute("XDEL", stream, *ids)
            await asyncio.gather(acked, deleted)
        finally:
            for entry_id, _ in entries:
                self.reader.drop(stream, entry_id)

    async def _still_needed(
        self, parked: list[tuple[str, str, str]], scopes: dict[tuple[str, str], Scope], entry_of: dict[str, str]
    ) -> list[tuple[str, str, str]]:
        """The jobs of reclaimed entries that still need the entry's attempt.

        An entry asks for one attempt in this region. If the job holds a
        pacing lease here (an attempt under way), or has an attempt here that
        started after the entry was written, the node that read the entry had
        parked the job before it died, and that attempt is the entry's:
        parking the job again would send it twice.
        """
        leased = await self.limiter.leased([(scopes[(d, c)], j) for j, d, c in parked])
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _d, _c in parked:
                pipe.lrange(keys.attempts(job_id), 0, -1)
            histories = await pipe.execute() if parked else []
        needed = []
        for (job_id, domain, customer), history in zip(parked, histories):
            written_ms = int(entry_of[job_id].split("-", 1)[0])
            sent_since = any(
                a.get("region") == self.region and int(a.get("started_ms") or 0) >= written_ms for a in map(orjson.loads, history)
            )
            if job_id in leased or sent_since:
                log.info(
                    "reclaimed entry %s: its attempt is %s; not parked again",
                    entry_of[job_id],
                    "under way" if job_id in leased else "done",
                    extra={"job_id": job_id, "region": self.region},
                )
                continue
            needed.append((job_id, domain, customer))
        return needed

    async def _admit_own_pending(self) -> None:
        """Admit the entries still pending under this node's name (when it stops)."""
        for stream in self.streams:
            try:
                rows = await self.redis.xpending_range(stream, self.group, "-", "+", 1000, consumername=self.consumer)
                if not rows:
                    continue
                ids = [row["message_id"] for row in rows]
                claimed = await self.redis.xclaim(stream, self.group, self.consumer, min_idle_time=0, message_ids=ids)
                live = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
                if live:
                    await self._admit(stream, live, reclaimed=True)
            except (ConnectionError, OSError, aioredis.ConnectionError, aioredis.TimeoutError, ResponseError):
                log.warning("could not admit what %s still held; it is reclaimed after the visibility timeout", stream, exc_info=True)

    async def _keep_and_reclaim_loop(self) -> None:
        interval = max(self.reader.keep_interval_s, 0.1)
        while not self._stopping.is_set():
            try:
                await asyncio.sleep(interval)
                await self.reader.keep_held()
                await self._reclaim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reclaim pass failed", exc_info=True)

    async def _reclaim(self) -> None:
        """Admit entries idle past the visibility timeout (their node died before acknowledging)."""
        for stream in self.streams:
            async for entries in self.reader.reclaim(stream):
                for entry_id, fields in entries:
                    RECLAIMED.labels(self.region).inc()
                    log.info("reclaimed entry %s", entry_id, extra={"job_id": fields.get("job"), "region": self.region})
                await self._admit_to_the_end(stream, entries, reclaimed=True)

    async def _admit_to_the_end(self, stream: str, entries: list[tuple[str, dict[str, str]]], *, reclaimed: bool = False) -> None:
        """``_admit``, shielded from the reader's cancellation (a stopping node).

        Admission may grant (``Scheduler.admit``): cancelled halfway, the grant's
        leases would never reach a send and would hold their jobs until they
        expired. ``stop`` waits for admissions under way before it admits what
        this node still holds.
        """
        task = asyncio.ensure_future(self._admit(stream, entries, reclaimed=reclaimed))
        self._admissions.add(task)
        task.add_done_callback(self._admissions.discard)
        await asyncio.shield(task)

    # -- sending ---------------------------------------------------------------

    def _on_grant(self, scope: Scope, lease: str) -> None:
        INFLIGHT.labels(self.region).inc()
        task = asyncio.create_task(self._run_grant(scope, lease, time.perf_counter()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_grant(self, scope: Scope, lease: str, granted_at: float) -> None:
        job_id = job_of(lease)
        hints: TargetHints | None = None
        requeue = False
        crashed = False
        try:
            hints = await self._attempt(scope, job_id, granted_at)
        except asyncio.CancelledError:
            requeue = True  # stopping: hand the job to another node now
            raise
        except Exception as exc:
            # Keep the lease without renewing it: the job is retried when it
            # expires, like a dead node's, rather than spinning on a bug; the
            # MAX_CRASHES-th crash of a job fails it (no job is granted forever).
            crashed = not await self._count_crash(scope, job_id, exc)
        finally:
            if not crashed:
                try:
                    # After finish/requeue: a job's next attempt may already be queued.
                    await asyncio.shield(self.limiter.release(scope, lease, hints, requeue=requeue))
                except asyncio.CancelledError:
                    pass
                except Exception:
                    log.warning(
                        "could not release %s; its lease will expire",
                        job_id,
                        exc_info=True,
                        extra={"job_id": job_id, "region": self.region, "domain": scope.domain},
                    )
            self.scheduler.done(scope, lease)
            INFLIGHT.labels(self.region).dec()

    async def _count_crash(self, scope: Scope, job_id: str, exc: Exception) -> bool:
        """Count an attempt that raised; True when the job was failed for it (its lease may go back)."""
        ATTEMPT_CRASHES.labels(self.region).inc()
        where = {"job_id": job_id, "region": self.region, "domain": scope.domain}
        job_key = keys.job(job_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:  # no stray record for a job that is gone
                pipe.exists(job_key)
                pipe.hincrby(job_key, "crashes", 1)
                exists, crashes = await pipe.execute()
            if not exists:
                await self.redis.delete(job_key)
                return False
            if crashes < MAX_CRASHES:
                log.warning("attempt crashed (%d of %d): %r", crashes, MAX_CRASHES, exc, extra=where)
                return False
            log.error("attempt crashed %d times; the job fails with internal_error", crashes, exc_info=exc, extra=where)
            attempt = {"region": self.region, "node": self.consumer, "started_ms": _now_ms(), "status_code": None,
                       "latency_ms": 0.0, "error": "internal_error: the attempt failed unexpectedly", "decision": FAILED}
            outcome = Outcome(error_kind="internal", error="internal_error")
            await self._finish(job_id, job_key, outcome, Decision(FAILED, "internal_error"), attempt, scope.domain)
            return True
        except Exception:
            log.warning("could not count a crashed attempt; its lease will expire", exc_info=True, extra=where)
            return False

    async def _attempt(self, scope: Scope, job_id: str, granted_at: float) -> TargetHints | None:
        job_key = keys.job(job_id)
        channel = keys.job_events(job_id)
        starting = self.batch.script(self.scripts.start_attempt, keys=[job_key], args=[_now_ms(), self.region, channel])
        first = self._first_sends.pop(job_id, None)
        if first is not None:
            # Taken at its acceptance, on this node, in one region: nothing else
            # knows the job yet, so the send need not wait for the record to say
            # it runs (start_attempt.lua never undoes a final state written after it).
            self._background(starting)
            return await self._send_and_record(
                scope, job_id, job_key, first.spec, granted_at, "0", "0", str(first.created_ms),
                first.mode == "fanout", first.tried, first.idempotent_key, accepted_at=first.accepted_at,
            )
        state = await starting
        if not state or state[0] in FINAL_STATES:
            return None  # gone, or another region already won: nothing to send
        _state, spec_json, retries, reroutes, created, mode, tried, unsafe, live, idem = state
        spec: dict[str, Any] = orjson.loads(spec_json)
        fanout = mode == "fanout"
        lease = None
        if unsafe == "1" and not fanout and int(live or 1) > 1:
            lease = await self._take_send_lease(job_id)
            if lease is None:
                return None  # another region is sending it; deferred until its lease ends
            if await self.redis.hget(job_key, "state") in FINAL_STATES:
                await self._drop_send_lease(job_id, lease)
                return None
        try:
            return await self._send_and_record(scope, job_id, job_key, spec, granted_at, retries, reroutes, created, fanout, tried, idem)
        finally:
            if lease is not None:
                await self._drop_send_lease(job_id, lease)

    async def _send_and_record(
        self,
        scope: Scope,
        job_id: str,
        job_key: str,
        spec: dict[str, Any],
        granted_at: float,
        retries: str | None,
        reroutes: str | None,
        created: str | None,
        fanout: bool,
        tried: str | None,
        idem: str | None,
        *,
        accepted_at: float | None = None,
    ) -> TargetHints:
        if not int(retries or 0) and not int(reroutes or 0) and created and not spec.get("retry_at"):
            PACING_WAIT.labels(self.region).observe(max(0.0, (_now_ms() - int(created)) / 1000.0))
        lag_s = time.perf_counter() - granted_at
        ROUTING_LATENCY.labels(self.region).observe(lag_s)
        if lag_s * 1000 > self.policy.tolerance_ms:
            # This node was too busy to send on time: count the send from now,
            # so the sends granted after it don't reach the target too close.
            PACING_LATE_SENDS.labels(self.region).inc()
            self._background(self.limiter.report_late(scope, lag_s * 1000))

        started_ms = _now_ms()
        headers = send_headers(spec, idem, self.settings.send_idempotency_key)
        if accepted_at is not None:
            ACCEPT_TO_SEND.labels(self.region).observe(time.perf_counter() - accepted_at)
        outcome = await self.executor.send(spec["method"], spec["url"], headers, spec["body"])
        ATTEMPTS.labels(self.region, _status_class(outcome)).inc()
        ATTEMPT_LATENCY.labels(self.region).observe(outcome.latency_ms / 1000.0)
        if self.outcomes is not None:
            self.outcomes.record(scope.domain, outcome.error_kind in (TIMEOUT, CONNECTION))

        hints = self._hints(outcome)
        if hints.pause_until_ms is not None:
            PACING_PAUSES.labels(self.region).inc()
            log.info(
                "%s paused for %.1f s (Retry-After on %s)",
                scope,
                (hints.pause_until_ms - _now_ms()) / 1000,
                outcome.status_code,
                extra={"job_id": job_id, "region": self.region, "domain": scope.domain},
            )

        policy = spec["retry_policy"]
        decision = decide(
            outcome,
            policy,
            int(retries or 0),
            int(reroutes or 0),
            base_s=self.settings.retry_backoff_base_s,
            cap_s=self.settings.retry_backoff_cap_s,
        )
        next_region = self.region
        if decision.action == REROUTE:
            if fanout:
                # Fanout sends from every region by design: try this one again instead.
                decision = (
                    Decision(RETRY, decision.reason, backoff_s(int(retries or 0), self.settings.retry_backoff_base_s, self.settings.retry_backoff_cap_s))
                    if int(retries or 0) < policy["max_retries"]
                    else Decision(FAILED, "retries_exhausted")
                )
            else:
                states = await self.region_states() if self.region_states is not None else {}
                tried_regions = [r for r in (tried or "").split(",") if r]
                target = reroute_target(spec, self.region, tried_regions, states, self.settings.region_ids)
                if target is None:
                    strict = spec.get("region_policy") == "strict"
                    decision = Decision(FAILED, "region_unavailable" if strict else "reroutes_exhausted")
                else:
                    next_region = target
        attempt = {
            "region": self.region,
            "node": self.consumer,
            "started_ms": started_ms,
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
            "decision": decision.action,
        }
        if decision.action in (SUCCESS, FAILED):
            await self._finish(job_id, job_key, outcome, decision, attempt, scope.domain)
        else:
            await self._requeue(job_id, job_key, decision, attempt, next_region, scope.domain)
        return hints

    async def _take_send_lease(self, job_id: str) -> str | None:
        """Hold the job's send lease, or defer the job until the holder's lease ends."""
        holder = f"{self.region}:{self.consumer}"
        lease_ms = int(self.settings.attempt_timeout_s * 1000) + SEND_LEASE_MARGIN_MS
        if await self.redis.set(keys.send_lease(job_id), holder, nx=True, px=lease_ms):
            return holder
        left_ms = await self.redis.pttl(keys.send_lease(job_id))
        delay_ms = max(int(left_ms), 0) + random.randint(20, 80)
        await self._requeue(job_id, keys.job(job_id), Decision("defer", "send_lease_held", delay_ms / 1000), None, self.region)
        return None

    async def _drop_send_lease(self, job_id: str, holder: str) -> None:
        try:
            await asyncio.shield(self.scripts.release_lease(keys=[keys.send_lease(job_id)], args=[holder]))
        except Exception:
            log.warning("could not release the send lease; it expires on its own", exc_info=True, extra={"job_id": job_id})

    def _background(self, coro: Any) -> None:
        """A short Redis call that must not hold up the send; kept until done."""

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.warning("pacing update failed", exc_info=True)

        task = asyncio.create_task(run())
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _hints(self, outcome: Outcome) -> TargetHints:
        wait_s = None
        if outcome.status_code in PAUSING_STATUSES:
            wait_s = retry_after_s(outcome.headers.get("retry-after"))
        return read_hints(
            outcome.status_code,
            outcome.headers,
            now_ms=_now_ms(),
            retry_after_s=wait_s,
            min_rps=self.policy.min_rps,
            max_pause_s=self.policy.max_pause_s,
        )

    async def _finish(
        self, job_id: str, job_key: str, outcome: Outcome, decision: Decision, attempt: dict[str, Any], domain: str | None = None
    ) -> None:
        partition = keys.job_partition(job_id) or 0
        result = outcome.result() if outcome.status_code is not None else None
        kind = outcome_kind(decision)
        decided = await asyncio.shield(
            self.batch.script(
                self.scripts.finish,
                keys=[
                    job_key,
                    keys.attempts(job_id),
                    keys.region_stream(partition, self.region),
                    keys.deliveries(partition),
                    keys.workflow_spawn(partition),
                    keys.queued(partition),
                ],
                args=[
                    self.group,
                    "",  # the stream entry was acknowledged at admission
                    kind,
                    orjson.dumps(result),
                    self.region,
                    _now_ms(),
                    orjson.dumps(attempt),
                    self.settings.job_ttl_s,
                    job_id,
                    decision.reason,
                    keys.job_events(job_id),
                ],
            )
        )
        if decided == 1:
            JOBS_FINISHED.labels(self.region, decision.action, decision.reason or "ok").inc()
            RACE_WINS.labels(self.region).inc()
        elif decided == 0:
            RACE_LOSSES.labels(self.region).inc()
        what = {1: f"finished {decision.action}", 0: "result lost to another region", 2: f"region out ({decision.reason}); other regions go on"}
        log.info(
            "job %s",
            what.get(decided, "gone"),
            extra={
                "job_id": job_id,
                "region": self.region,
                "domain": domain,
                "status_code": outcome.status_code,
                "reason": decision.reason or None,
            },
        )

    async def _requeue(
        self,
        job_id: str,
        job_key: str,
        decision: Decision,
        attempt: dict[str, Any] | None,
        next_region: str,
        domain: str | None = None,
    ) -> None:
        """Queue the next attempt: a retry here, a reroute there, or a deferral (nothing sent)."""
        partition = keys.job_partition(job_id) or 0
        kind = {RETRY: "retry", REROUTE: "reroute"}.get(decision.action, "defer")
        now = _now_ms()
        due = now + int(decision.delay_s * 1000)
        if attempt is not None:
            attempt["next_region"] = next_region
        await asyncio.shield(
            self.batch.script(
                self.scripts.requeue,
                keys=[
                    job_key,
                    keys.attempts(job_id),
                    keys.region_stream(partition, self.region),
                    keys.delayed(partition),
                    keys.region_stream(partition, next_region),
                ],
                args=[
                    self.group, "", orjson.dumps(attempt) if attempt is not None else "", kind, next_region, due, now, job_id,
                    self.region, keys.job_events(job_id),
                ],
            )
        )
        log.info(
            "job %s: %s to %s in %.0f ms",
            job_id,
            kind,
            next_region,
            decision.delay_s * 1000,
            extra={"job_id": job_id, "region": self.region, "domain": domain, "reason": decision.reason},
        )

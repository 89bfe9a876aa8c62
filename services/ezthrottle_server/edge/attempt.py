"""One attempt of a granted job: start → send → decide → finish or requeue, then release its lease.

The region's worker (``edge/worker.py``) hands each lease its scheduler
grants to :meth:`Attempts.run`:

1. ``start_attempt.lua`` marks the job running here and answers its
   :class:`~ezthrottle_server.common.job_scripts.JobState` (a job taken at its
   acceptance skips the wait: :class:`FirstSend` already says all of it);
2. an unsafe request raced across regions takes its send lease first, or is
   deferred while another region holds it;
3. the executor sends it (``edge/executor.py``), ``retry.decide`` reads the
   answer, and ``racing.reroute_target`` picks a region for a reroute;
4. ``finish.lua`` records a final outcome (the first one claims the job), or
   ``requeue.lua`` queues the next attempt (here, elsewhere, or later);
5. ``release.lua`` gives the lease back with what the answer said about the
   domain's limits (rate headers, a ``Retry-After`` pause).

An attempt that raises keeps its lease without renewing it, so the job is
tried again when the lease expires, like a dead node's; the ``MAX_CRASHES``-th
crash of one job fails it with ``internal_error`` (no job is granted forever).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..common import job_scripts, keys, leases
from ..common.batching import Batcher
from ..common.config import Settings
from ..common.job_scripts import Finished, FinishKind, JobState, NextAttempt, RegionResult, RequeueKind
from ..common.metrics import (
    ACCEPT_TO_SEND,
    ATTEMPT_CRASHES,
    ATTEMPT_LATENCY,
    ATTEMPTS,
    JOBS_EXPIRED,
    JOBS_FINISHED,
    PACING_LATE_SENDS,
    PACING_PAUSES,
    PACING_WAIT,
    RACE_LOSSES,
    RACE_WINS,
    ROUTING_LATENCY,
    labelled,
)
from ..common.redisconn import Scripts
from ..pacing.flow import FlowControl, FlowSpec
from ..pacing.hints import PAUSING_STATUSES, TargetHints, read_hints
from ..pacing.limiter import Limiter, PacingPolicy, job_of
from ..pacing.scope import Scope
from .executor import CONNECTION, TIMEOUT, AttemptResult, Executor
from .outcomes import OutcomeWindow
from .racing import finish_kind, reroute_target, send_headers
from .retry import FAILED, REROUTE, RETRY, SUCCESS, Decision, backoff_s, decide, retry_after_s
from .webhooks import EdgeWebhooks, KnownJob

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

MAX_CRASHES = 3  # attempts of one job that raise unexpectedly before the job fails with internal_error
SEND_LEASE_MARGIN_MS = 5000  # a send lease outlives the attempt timeout by this much
_REQUEUE_KINDS = {RETRY: RequeueKind.RETRY, REROUTE: RequeueKind.REROUTE}
UNSENT = TargetHints()  # the job ended cancelled or expired as it started: never sent, the rate gets its interval back
HELD_BY_KEY = TargetHints()  # its flow-control key held it back: deferred, never sent, the rate gets its interval back


@dataclass(slots=True)
class FirstSend:
    """What the first attempt of a job this node just accepted needs, known without reading the record."""

    spec: dict[str, Any]
    idempotent_key: str
    created_ms: int
    mode: str
    tried: str
    accepted_at: float  # time.perf_counter() when submit.lua answered

    def state(self) -> JobState:
        return JobState("queued", self.spec, 0, 0, self.created_ms, self.mode, self.tried, False, 1, self.idempotent_key)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_side_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("pacing update failed", exc_info=fut.exception())


def _status_class(sent: AttemptResult) -> str:
    if sent.status_code is None:
        return sent.error_kind or "error"
    return f"{sent.status_code // 100}xx"


class Attempts:
    """The attempts of one edge node: each granted lease, run to its end."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        batch: Batcher,
        executor: Executor,
        limiter: Limiter,
        *,
        group: str,
        consumer: str,
    ) -> None:
        assert settings.region is not None
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.batch = batch
        self.executor = executor
        self.limiter = limiter
        self.policy: PacingPolicy = limiter.policy
        self.region = settings.region
        self.group = group
        self.consumer = consumer
        self.outcomes: OutcomeWindow | None = None  # each send's outcome, for region health (set by the app)
        # Region states for reroutes (set by the app: the coordinator's published view).
        self.region_states: Callable[[], Awaitable[dict[str, str]]] | None = None
        self.first_sends: dict[str, FirstSend] = {}  # taken jobs between their grant and their attempt
        self.flow = FlowControl(redis)
        self._flow_held: dict[str, tuple[str, str]] = {}  # lease -> (customer, key) holding a place in a flow-control key
        self._side: set[asyncio.Future[Any]] = set()
        # The first POST of the webhooks of the jobs this edge finishes (edge/webhooks.py); None: the delivery service sends them.
        self.webhooks = EdgeWebhooks(settings, redis, scripts, batch, executor) if settings.edge_delivers_webhooks else None
        # this region's children of the metrics every attempt updates, labelled once
        self._pacing_wait = PACING_WAIT.labels(self.region)
        self._routing_latency = ROUTING_LATENCY.labels(self.region)
        self._accept_to_send = ACCEPT_TO_SEND.labels(self.region)
        self._attempt_latency = ATTEMPT_LATENCY.labels(self.region)
        self._race_wins = RACE_WINS.labels(self.region)

    async def run(self, scope: Scope, lease: str, granted_at: float) -> None:
        """Run the attempt a lease was granted for, and release the lease (unless the attempt crashed)."""
        job_id = job_of(lease)
        hints: TargetHints | None = None
        requeue = False
        crashed = False
        try:
            hints = await self._attempt(scope, lease, granted_at)
        except asyncio.CancelledError:
            requeue = True  # stopping: hand the job to another node now
            raise
        except Exception as exc:
            crashed = not await self._count_crash(scope, job_id, exc)
        finally:
            if not crashed:
                try:
                    # After finish/requeue: a job's next attempt may already be queued.
                    unsent = hints is UNSENT or hints is HELD_BY_KEY
                    await asyncio.shield(self.limiter.release(scope, lease, hints, requeue=requeue, refund=unsent))
                except asyncio.CancelledError:
                    pass
                except Exception:
                    log.warning(
                        "could not release %s; its lease will expire",
                        job_id,
                        exc_info=True,
                        extra={"job_id": job_id, "region": self.region, "domain": scope.domain},
                    )
            held = self._flow_held.pop(lease, None)
            if held is not None:  # the key's place goes back whatever became of the attempt
                try:
                    await asyncio.shield(self.flow.release(*held, lease))
                except Exception:
                    log.warning("could not release a flow-control place; it expires with its lease", exc_info=True)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the short background calls still running, and the webhooks being sent (a stopping node):
        those not sent by then go to the delivery service after their grace."""
        if self._side:
            await asyncio.wait(self._side, timeout=timeout_s)
        if self.webhooks is not None:
            await self.webhooks.stop(timeout_s)

    def background(self, call: Awaitable[Any]) -> None:
        """A short Redis call that must not hold up the send; kept until done (a batched call's future needs no task)."""
        side: asyncio.Future[Any]
        if asyncio.isfuture(call):
            side = call
            side.add_done_callback(_log_side_failure)
        else:

            async def run() -> None:
                try:
                    await call
                except Exception:
                    log.warning("pacing update failed", exc_info=True)

            side = asyncio.create_task(run())
        self._side.add(side)
        side.add_done_callback(self._side.discard)

    # -- one attempt ------------------------------------------------------------

    async def _attempt(self, scope: Scope, lease: str, granted_at: float) -> TargetHints | None:
        job_id = job_of(lease)
        now = _now_ms()
        run = partial(self.batch.script, self.scripts.start_attempt)
        starting = job_scripts.start_attempt(run, job_id, self.region, now, self.settings.job_ttl_s)
        first = self.first_sends.pop(job_id, None)
        if first is not None and now >= (first.spec.get("start_before_ms") or now + 1):
            first = None  # its deadline passed since its acceptance: start_attempt.lua expires it, nothing is sent
        if first is not None:
            # Taken at its acceptance, on this node, in one region: nothing else
            # knows the job yet, so the send need not wait for the record to say
            # it runs (start_attempt.lua never undoes a final state written after it).
            self.background(starting)
            return await self._send_and_record(scope, lease, first.state(), granted_at, accepted_at=first.accepted_at)
        state = JobState.parse(await starting)
        if state is not None and state.state in JobState.ENDED_UNSENT:
            if state.ended_here == "start_before_passed":
                JOBS_EXPIRED.labels("start_before_passed").inc()  # a cancel was counted when it was asked for
            return UNSENT  # cancelled or expired (now or before): nothing is sent
        if state is None or state.final:
            return None  # gone, or another region already won: nothing to send
        if not await self._flow_allows(scope, lease, state):
            return HELD_BY_KEY
        holder = None
        if state.unsafe and not state.fanout and state.live > 1:
            holder = await self._take_send_lease(job_id)
            if holder is None:
                return None  # another region is sending it; deferred until its lease ends
            if await self.redis.hget(keys.job(job_id), "state") in JobState.FINAL:  # type: ignore[misc]  # redis-py#2399
                await self._drop_send_lease(job_id, holder)
                return None
        try:
            return await self._send_and_record(scope, lease, state, granted_at)
        finally:
            if holder is not None:
                await self._drop_send_lease(job_id, holder)

    async def _flow_allows(self, scope: Scope, lease: str, state: JobState) -> bool:
        """A job with a flow-control key needs the key's leave too (pacing/flow.py); held back, it is deferred."""
        flow = FlowSpec.of(state.spec)
        if flow is None:
            return True
        job_id = job_of(lease)
        customer = await self.redis.hget(keys.job(job_id), "customer") or ""  # type: ignore[misc]  # redis-py#2399
        wait_ms = await self.flow.acquire(
            customer, flow, lease, lease_ms=int(self.settings.attempt_timeout_s * 1000) + SEND_LEASE_MARGIN_MS
        )
        self.background(self.flow.note_domain(customer, flow.key, scope.domain))
        if not wait_ms:
            self._flow_held[lease] = (customer, flow.key)
            return True
        delay_s = (wait_ms + random.randint(5, 25)) / 1000
        await self._requeue(job_id, Decision("defer", "flow_control", delay_s), None, self.region)
        await self.flow.deferred(customer, flow.key, f"{self.region}|{job_id}", _now_ms() + int(delay_s * 1000))
        return False

    async def _send_and_record(
        self, scope: Scope, lease: str, job: JobState, granted_at: float, *, accepted_at: float | None = None
    ) -> TargetHints:
        job_id = job_of(lease)
        spec = job.spec
        if not job.retries and not job.reroutes and job.created_ms and not spec.get("retry_at"):
            self._pacing_wait.observe(max(0.0, (_now_ms() - job.created_ms) / 1000.0))
        lag_s = time.perf_counter() - granted_at
        self._routing_latency.observe(lag_s)
        if lag_s * 1000 > self.policy.tolerance_ms:
            # This node was too busy to send on time: count the send from now,
            # so the sends granted after it don't reach the target too close.
            labelled(PACING_LATE_SENDS, self.region).inc()
            if not self.limiter.fold_late(scope, lag_s * 1000):  # into the report in flight: no task for it
                self.background(self.limiter.report_late(scope, lag_s * 1000))

        started_ms = _now_ms()
        headers = send_headers(spec, job.idempotent_key, self.settings.send_idempotency_key)
        if accepted_at is not None:
            self._accept_to_send.observe(time.perf_counter() - accepted_at)
        spaced = partial(self.limiter.until_spaced, scope, lease, max_wait_s=self.settings.attempt_timeout_s)
        left = partial(self.limiter.left_late, scope, lease)
        sent = await self.executor.send(spec["method"], spec["url"], headers, spec["body"], before=spaced, left=left)
        labelled(ATTEMPTS, self.region, _status_class(sent)).inc()
        self._attempt_latency.observe(sent.latency_ms / 1000.0)
        if self.outcomes is not None:
            self.outcomes.record(scope.domain, sent.error_kind in (TIMEOUT, CONNECTION))

        hints = self._hints(sent)
        held = self._flow_held.get(lease)
        if hints.pause_until_ms is not None and held is not None and await self._pauses_the_key(scope):
            # a Retry-After on a job with a flow-control key pauses the key, not the domain
            await self.flow.pause(*held, hints.pause_until_ms)
            hints = dataclasses.replace(hints, pause_until_ms=None)
        if hints.pause_until_ms is not None:
            PACING_PAUSES.labels(self.region).inc()
            log.info(
                "%s paused for %.1f s (Retry-After on %s)",
                scope,
                (hints.pause_until_ms - _now_ms()) / 1000,
                sent.status_code,
                extra={"job_id": job_id, "region": self.region, "domain": scope.domain},
            )

        decision, next_region = await self._decide(job, sent)
        if decision.action == FAILED and hints.answer == "infra" and await self.limiter.circuit_open(scope):
            # its budget ran out while the domain's circuit breaker was open: say so, not a generic reason
            decision = Decision(FAILED, "circuit_open")
        attempt = {
            "region": self.region,
            "node": self.consumer,
            "started_ms": started_ms,
            "status_code": sent.status_code,
            "latency_ms": sent.latency_ms,
            "error": sent.error,
            "decision": decision.action,
        }
        if decision.action in (SUCCESS, FAILED):
            await self._finish(job_id, sent, decision, attempt, scope.domain, job.spec)
        else:
            await self._requeue(job_id, decision, attempt, next_region, scope.domain, sent)
        return hints

    async def _decide(self, job: JobState, sent: AttemptResult) -> tuple[Decision, str]:
        """What follows the answer, and in which region the next attempt goes."""
        policy = job.spec["retry_policy"]
        base_s, cap_s = self.settings.retry_backoff_base_s, self.settings.retry_backoff_cap_s
        decision = decide(sent, policy, job.retries, job.reroutes, base_s=base_s, cap_s=cap_s)
        if decision.action != REROUTE:
            return decision, self.region
        if job.fanout:
            # Fanout sends from every region by design: try this one again instead.
            if job.retries < policy["max_retries"]:
                return Decision(RETRY, decision.reason, backoff_s(job.retries, base_s, cap_s)), self.region
            return Decision(FAILED, "retries_exhausted"), self.region
        states = await self.region_states() if self.region_states is not None else {}
        tried = [r for r in job.tried.split(",") if r]
        target = reroute_target(job.spec, self.region, tried, states, self.settings.region_ids)
        if target is None:
            strict = job.spec.get("region_policy") == "strict"
            return Decision(FAILED, "region_unavailable" if strict else "reroutes_exhausted"), self.region
        return decision, target

    async def _pauses_the_key(self, scope: Scope) -> bool:
        """Unless domains.yaml says ``pause: domain``, a Retry-After pauses a job's flow-control key."""
        pause: str | None = await self.redis.hget(keys.pacing_conf(scope.domain), "pause")  # type: ignore[misc]  # redis-py#2399
        return pause != "domain"

    def _hints(self, sent: AttemptResult) -> TargetHints:
        if sent.status_code is None:  # no answer: infrastructure (the circuit breaker counts it), or refused here
            return TargetHints(answer="infra" if sent.error_kind in (TIMEOUT, CONNECTION) else "")
        wait_s = None
        if sent.status_code in PAUSING_STATUSES:
            wait_s = retry_after_s(sent.headers.get("retry-after"))
        return read_hints(
            sent.status_code,
            sent.headers,
            now_ms=_now_ms(),
            retry_after_s=wait_s,
            min_rps=self.policy.min_rps,
            max_pause_s=self.policy.max_pause_s,
        )

    # -- unsafe requests raced across regions: one sender at a time ---------------

    async def _take_send_lease(self, job_id: str) -> str | None:
        """Hold the job's send lease, or defer the job until the holder's lease ends."""
        holder = f"{self.region}:{self.consumer}"
        lease_ms = int(self.settings.attempt_timeout_s * 1000) + SEND_LEASE_MARGIN_MS
        if await self.redis.set(keys.send_lease(job_id), holder, nx=True, px=lease_ms):
            return holder
        left_ms = await self.redis.pttl(keys.send_lease(job_id))
        delay_ms = max(int(left_ms), 0) + random.randint(20, 80)
        await self._requeue(job_id, Decision("defer", "send_lease_held", delay_ms / 1000), None, self.region)
        return None

    async def _drop_send_lease(self, job_id: str, holder: str) -> None:
        try:
            await asyncio.shield(leases.release(self.scripts.release_lease, keys.send_lease(job_id), holder=holder))
        except Exception:
            log.warning("could not release the send lease; it expires on its own", exc_info=True, extra={"job_id": job_id})

    # -- recording what happened -------------------------------------------------

    async def _finish(
        self,
        job_id: str,
        sent: AttemptResult,
        decision: Decision,
        attempt: dict[str, Any],
        domain: str | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        """Record the job's result in this region (``finish.lua``); the webhooks of a job it decides are
        handed to this edge, with the job's final record when ``spec`` is given (no read back)."""
        result = RegionResult(
            job_id=job_id,
            region=self.region,
            kind=FinishKind(finish_kind(decision)),
            result=sent.result() if sent.status_code is not None else None,
            attempt=attempt,
            reason=decision.reason,
            group=self.group,  # no entry to acknowledge: it was at admission
        )
        run = partial(self.batch.script, self.scripts.finish)
        grace_ms = self.webhooks.grace_ms if self.webhooks is not None else 0
        now = _now_ms()
        decided, handoffs, final = await asyncio.shield(
            job_scripts.finish_handing_off(run, result, now_ms=now, ttl_s=self.settings.job_ttl_s, grace_ms=grace_ms)
        )
        if handoffs and self.webhooks is not None:
            known = None
            if final is not None and spec is not None:
                known = KnownJob(handoffs[0], final.record, final.attempts, spec)
            self.webhooks.offer(handoffs, known)
        if decided is Finished.DECIDED:
            labelled(JOBS_FINISHED, self.region, decision.action, decision.reason or "ok").inc()
            self._race_wins.inc()
        elif decided is Finished.LOST:
            RACE_LOSSES.labels(self.region).inc()
        what = {
            Finished.DECIDED: f"finished {decision.action}",
            Finished.LOST: "result lost to another region",
            Finished.REGION_OUT: f"region out ({decision.reason}); other regions go on",
        }
        log.info(
            "job %s",
            what.get(decided, "gone"),
            extra={
                "job_id": job_id,
                "region": self.region,
                "domain": domain,
                "status_code": sent.status_code,
                "reason": decision.reason or None,
            },
        )

    async def _requeue(
        self,
        job_id: str,
        decision: Decision,
        attempt: dict[str, Any] | None,
        next_region: str,
        domain: str | None = None,
        sent: AttemptResult | None = None,
    ) -> None:
        """Queue the next attempt: a retry here, a reroute there, or a deferral (nothing sent)."""
        kind = _REQUEUE_KINDS.get(decision.action, RequeueKind.DEFER)
        now = _now_ms()
        if attempt is not None:
            attempt["next_region"] = next_region
        result = sent.result() if sent is not None and sent.status_code is not None else None
        nxt = NextAttempt(job_id, self.region, next_region, kind, now + int(decision.delay_s * 1000), attempt, self.group, result)
        run = partial(self.batch.script, self.scripts.requeue)
        await asyncio.shield(job_scripts.requeue(run, nxt, now_ms=now, ttl_s=self.settings.job_ttl_s))
        log.info(
            "job %s: %s to %s in %.0f ms",
            job_id,
            kind.value,
            next_region,
            decision.delay_s * 1000,
            extra={"job_id": job_id, "region": self.region, "domain": domain, "reason": decision.reason},
        )

    async def _count_crash(self, scope: Scope, job_id: str, exc: Exception) -> bool:
        """Count an attempt that raised; True when the job was failed for it (its lease may go back)."""
        ATTEMPT_CRASHES.labels(self.region).inc()
        where = {"job_id": job_id, "region": self.region, "domain": scope.domain}
        job_key = keys.job(job_id)
        try:
            if not await self.redis.exists(job_key):  # gone: no stray record for it
                return False
            crashes = await self.redis.hincrby(job_key, "crashes", 1)  # type: ignore[misc]  # redis-py#2399
            if crashes < MAX_CRASHES:
                log.warning("attempt crashed (%d of %d): %r", crashes, MAX_CRASHES, exc, extra=where)
                return False
            log.error("attempt crashed %d times; the job fails with internal_error", crashes, exc_info=exc, extra=where)
            attempt = {
                "region": self.region,
                "node": self.consumer,
                "started_ms": _now_ms(),
                "status_code": None,
                "latency_ms": 0.0,
                "error": "internal_error: the attempt failed unexpectedly",
                "decision": FAILED,
            }
            sent = AttemptResult(error_kind="internal", error="internal_error")
            await self._finish(job_id, sent, Decision(FAILED, "internal_error"), attempt, scope.domain)
            return True
        except Exception:
            log.warning("could not count a crashed attempt; its lease will expire", exc_info=True, extra=where)
            return False

"""Acceptance: a validated job becomes durable, or is refused, in one place.

:meth:`Intake.accept` owns everything between a job that passed validation
and the answer the API gives:

- its idempotent key (the job's own, or the HASH of customer, method, url and
  body) and so its partition and id, the quota and the ceiling of jobs not
  yet final, and what ``submit.lua`` writes (the record, an entry in each
  region's stream, or parked until ``retry_at``; all or nothing): the one
  acceptance path every service shares, ``common/acceptance.py``;
- the regions it runs in (``common/routing.py``, from this edge's live view),
  and the answers to a refusal (``edge/quota.py``, ``edge/admission.py``);
- the fast path from accept to send (:class:`FastPath`): a job for this region
  alone, due now, whose domain is idle, is leased from its domain's limit as it
  is written (on one Redis in the same script, ``accept.lua``; on a cluster one
  round trip before it, ``take.lua``), gets no stream entry, and is sent by this
  node as soon as its answer is written (:attr:`Accepted.send`).

It answers :class:`Accepted`, :class:`Duplicate` or :class:`Refused`; the
handler in ``edge/api.py`` only turns that into HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..common import acceptance, job_scripts
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.job_scripts import Submission, SubmitReply, Submitted
from ..common.metrics import JOBS_DUPLICATE, JOBS_SUBMITTED, labelled
from ..common.redisconn import Scripts
from ..common.routing import RegionStates, choose_regions
from ..common.urls import domain_of
from ..pacing.scope import Scope
from .admission import Admission
from .attempt import FirstSend
from .quota import Quotas
from .worker import RegionWorker, Taken

log = logging.getLogger(__name__)

NO_TAKE_S = 0.05  # after take.lua said no for a scope, accepted jobs take the usual way this long


@dataclass(slots=True)
class Accepted:
    job_id: str
    idempotent_key: str
    status: str  # "queued", or "racing": queued in several regions, the first final outcome wins
    send: Callable[[], None] | None = None  # a taken job: sends it; run once its answer is written


@dataclass(slots=True)
class Duplicate:
    job_id: str  # the first job's
    idempotent_key: str


@dataclass(slots=True)
class Refused:
    error: ApiError  # 429: the quota is spent, or the customer has its ceiling of jobs not yet final


@dataclass(slots=True)
class TakePlan:
    """A send slot held for a job accepted on one Redis, and what accept.lua needs to take it."""

    scope: Scope
    keys: list[str]
    args: list[Any]


class FastPath:
    """Takes a job at its acceptance when its scope would grant it at once anyway (see the module docstring).

    Every plan ends in :meth:`planned`, and every :class:`Taken` in the worker's
    ``send_taken``: sent (created), given back (a duplicate or refused), or left
    to expire (unknown: the submission failed, the job may exist; its lease
    recovers it then).
    """

    def __init__(self, worker: RegionWorker) -> None:
        self.worker = worker
        self.limiter = worker.limiter
        self.scheduler = worker.scheduler
        self._no_take: dict[Scope, float] = {}  # scope -> monotonic time until which it is skipped

    @property
    def in_submission(self) -> bool:
        """One Redis: the submission itself takes the job (accept.lua, :meth:`plan`); a cluster takes it first (:meth:`take`)."""
        return self.limiter.accept_script is not None

    def plan(self, customer: str, domain: str) -> TakePlan | None:
        """On one Redis: hold a send slot for a job about to be accepted, for accept.lua to take it.

        ``accept.lua`` asks the scope once the job is known to be new and
        allowed; with a lease it writes no stream entry. One round trip for
        both, and a duplicate or refused submission takes nothing.
        """
        held = self._hold_slot(customer, domain)
        if held is None:
            return None
        scope, inflight = held
        args = self.limiter.take_args(scope, customer, inflight=inflight, lease_ms=self.scheduler.lease_ms)
        return TakePlan(scope, self.limiter.take_keys(scope), args)

    def planned(self, job_id: str, plan: TakePlan, lease: str | None) -> Taken | None:
        """accept.lua answered (``lease``: None when it took nothing, or its answer never came)."""
        if lease:
            self.worker.forget_accepting(job_id)  # no stream entry for the reader to find
            return Taken(plan.scope, lease)
        self.scheduler.end_take(plan.scope, None)
        self._skip(plan.scope)
        return None

    async def take(self, job_id: str, customer: str, domain: str) -> Taken | None:
        """On a cluster: lease a job this node is about to accept, if its scope would grant it at once.

        The caller then writes the job *without* a stream entry, and the lease
        alone holds it, as a granted job is held: should this node die, the
        lease expires and the next grant on the scope (the ready set is indexed
        by the lease's expiry in the same round trip) puts the job at the front
        of its queue. None (nothing held) when the job should take the usual
        way: the scope's mode not known here, no free send slot, a grant for the
        scope in flight, or the scope said no a moment ago.
        """
        held = self._hold_slot(customer, domain)
        if held is None:
            return None
        scope, inflight = held
        lease: str | None = None
        try:
            lease_ms = self.scheduler.lease_ms
            watch = self.limiter.watch_lease(scope, int(time.time() * 1000) + lease_ms)  # the take joins this pipeline
            try:
                lease = await self.limiter.take(scope, job_id, customer, inflight=inflight, lease_ms=lease_ms)
            except Exception:
                # A lost reply may have left the lease (always "<job>@0"): give it back, the job takes the usual way.
                log.warning("take failed; the job takes the usual way", exc_info=True)
                self.worker.attempts.background(self.limiter.release(scope, f"{job_id}@0", refund=True))
            try:
                await watch
            except Exception:  # only the index for a crash; the lease is released as usual
                log.warning("could not index a taken lease's expiry", exc_info=True)
        finally:
            if lease is None:
                self.scheduler.end_take(scope, None)
                self._skip(scope)
        return Taken(scope, lease) if lease is not None else None

    def _hold_slot(self, customer: str, domain: str) -> tuple[Scope, int] | None:
        """The job's scope and this node's sends in flight for it, with a send slot held; None: no fast path."""
        scope = self.limiter.cached_scope(domain, customer)
        if scope is None or self._no_take.get(scope, 0.0) > time.monotonic():
            return None
        inflight = self.scheduler.reserve_take(scope)
        return None if inflight is None else (scope, inflight)

    def _skip(self, scope: Scope) -> None:
        if len(self._no_take) > 10_000:
            self._no_take.clear()
        self._no_take[scope] = time.monotonic() + NO_TAKE_S


class Intake:
    def __init__(
        self,
        settings: Settings,
        scripts: Scripts,
        worker: RegionWorker,
        regions: RegionStates,
        quotas: Quotas,
        admission: Admission,
    ) -> None:
        assert settings.region is not None
        self.settings = settings
        self.region = settings.region
        self.scripts = scripts
        self.worker = worker
        self.regions = regions
        self.quotas = quotas
        self.admission = admission
        self.fast = FastPath(worker)

    async def prepare(self, customer: str) -> None:
        """Read once what each job of a batch asks about its customer (the regions' states, its tier, its byte
        budget): the batch's acceptances then find it at hand, and their scripts reach Redis in the batch's order.
        Else each would read it on a connection of its own and go on as its answer came back, so that the quota
        or the ceiling, running out midway, could refuse an early job of the batch and take a later one."""
        await self.regions.states()
        await self.quotas.tier_of(customer)
        await self.admission.budget.room(customer, 0)

    async def accept(self, job: dict[str, Any], customer: str) -> Accepted | Duplicate | Refused:
        """Make a validated job durable (see the module docstring)."""
        settings = self.settings
        now = int(time.time() * 1000)
        regions = choose_regions(job["regions"], job["region_policy"], self.region, await self.regions.states(), settings.region_ids)
        t = acceptance.ticket(settings, job, customer, regions, now_ms=now)
        job_id, idem, fields = t.job_id, t.idempotent_key, t.fields
        due = job["retry_at"] or 0
        tier = await self.quotas.tier_of(customer)
        quota_left = acceptance.quota_left(settings, tier)
        # through the batcher: concurrent acceptances (a batch's jobs) reach the ceiling and the quota in their order
        batch = self.worker.batch
        queued_left = await acceptance.queued_left(self.quotas.redis, settings, customer, t.partition, batch=batch)
        room = await self.admission.budget.room(customer, t.partition)
        allowed, held = await acceptance.hold_quota(self.quotas.redis, self.scripts, settings, tier, t, batch=batch)
        if not allowed:
            raise await self.quotas.exceeded(customer)
        domain = domain_of(job["url"])
        plan: TakePlan | None = None
        taken: Taken | None = None
        if due <= now and regions == [self.region] and not job.get("flow_control"):  # a key's leave is asked at the send
            if self.fast.in_submission:
                plan = self.fast.plan(customer, domain)
            else:
                taken = await self.fast.take(job_id, customer, domain)
        if taken is not None:
            fields[f"sending:{self.region}"] = now  # its send is under way from its acceptance (cancel.lua's in_flight)
        if taken is None and due <= now and self.region in regions:  # this edge's reader may park it without reading it back
            self.worker.accepting(job_id, customer, domain)
        streams = [] if taken is not None else regions
        submission = acceptance.submission(
            settings, t, job, streams=streams, domain=domain, quota_left=quota_left, queued_left=queued_left, room=room
        )
        # An error here keeps the request held: the script may have run (a lost
        # reply), and the cap may err low but never past itself. Batched: the
        # submissions of one loop turn go to Redis as one pipeline.
        try:
            reply = await self._submit(submission, plan)
        except BaseException:
            if plan is not None:
                self.fast.planned(job_id, plan, None)  # a lease it may have taken expires; the job, if written, is recovered then
            if taken is not None:
                self.worker.send_taken(job_id, taken, None)
            raise
        created = reply.submitted is Submitted.CREATED
        if plan is not None:
            taken = self.fast.planned(job_id, plan, reply.lease if created else None)
        if taken is not None and not created:
            self.worker.send_taken(job_id, taken, False)  # nothing created: the lease goes back
            taken = None
        if not created:
            await acceptance.give_back(self.scripts, held)
            if reply.submitted is Submitted.QUOTA_SPENT:
                return Refused(await self.quotas.exceeded(customer))
            if reply.submitted is Submitted.QUEUE_FULL:
                return Refused(self.admission.queue_full(customer))
            if reply.submitted is Submitted.BYTES_FULL:
                return Refused(self.admission.bytes_full(customer, await self.admission.budget.budget()))
            JOBS_DUPLICATE.labels(self.region).inc()
            return Duplicate(reply.job_id, idem)
        self.admission.budget.added(customer, t.partition, reply.bytes)
        first = FirstSend(job, idem, now, fields["mode"], fields["tried"], time.perf_counter())
        try:
            labelled(JOBS_SUBMITTED, self.region).inc()
            self.admission.accepted(customer)
            log.debug(
                "job accepted",
                extra={"job_id": job_id, "region": self.region, "domain": domain, "customer": customer, "taken": taken is not None},
            )
            status = "racing" if len(regions) > 1 and fields["mode"] == "race" else "queued"
        except BaseException:
            if taken is not None:  # created: sent whatever becomes of the answer
                self.worker.send_taken(job_id, taken, True, first)
            raise
        if taken is None:
            return Accepted(job_id, idem, status)
        return Accepted(job_id, idem, status, send=partial(self.worker.send_taken, job_id, taken, True, first))

    async def _submit(self, submission: Submission, plan: TakePlan | None) -> SubmitReply:
        batch = self.worker.batch
        if plan is None:
            return await job_scripts.submit(partial(batch.script, self.scripts.submit), submission)
        accept_script = self.worker.limiter.accept_script
        assert accept_script is not None
        return await job_scripts.submit_and_take(partial(batch.script, accept_script), submission, plan.keys, plan.args)

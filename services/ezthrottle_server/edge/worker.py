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
(``executor_concurrency``), and each granted lease goes to
:class:`~ezthrottle_server.edge.attempt.Attempts` (start → send → decide →
finish or requeue → release). A granted job is leased: the node renews its
leases while it works, so nobody takes a job from a live node however long it
takes; a dead node's leases expire and the next grant on the scope puts its
jobs back at the front of the queue. A node that stops gracefully puts back at
once what it could not finish.

**Taken jobs.** A job the node's API leased at its acceptance (the fast path,
``edge/intake.py``) reaches the scheduler through :meth:`RegionWorker.send_taken`
and is sent at once, with no stream entry and no admission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..common import keys
from ..common.batching import Batcher
from ..common.config import Settings
from ..common.metrics import INFLIGHT, RECLAIMED
from ..common.redisconn import Scripts
from ..common.streams import StreamWorker
from ..common.urls import domain_of
from ..pacing.limiter import Limiter, PacingPolicy
from ..pacing.scheduler import Scheduler
from ..pacing.scope import SHARED, Scope
from .attempt import Attempts, FirstSend
from .executor import Executor
from .outcomes import OutcomeWindow

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"success", "failed", "cancelled", "expired"})  # skipped at admission: nothing more to send
ACCEPTED_HINTS = 4096  # jobs this node's API just accepted, remembered until its reader parks them


@dataclass(slots=True)
class Taken:
    """A lease the fast path holds on a job this node is accepting (``edge/intake.py``)."""

    scope: Scope
    lease: str


class RegionWorker(StreamWorker):
    min_keep_interval_s = 0.1

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        executor: Executor,
        outcomes: OutcomeWindow | None = None,
    ) -> None:
        assert settings.region is not None
        super().__init__(redis, keys.edge_group(settings.region), settings.node_id, settings.visibility_timeout_ms)
        self.settings = settings
        self.scripts = scripts
        self.batch = Batcher(redis)  # the per-job scripts of concurrent sends, one pipeline per loop turn
        self.executor = executor
        self.region = settings.region
        self._inflight = INFLIGHT.labels(self.region)
        self.streams = [keys.region_stream(p, self.region) for p in range(settings.partitions)]
        self.policy = PacingPolicy.from_settings(settings)
        self.limiter = Limiter(redis, self.policy, self.region, settings.region_ids, batch=self.batch)
        self.scheduler = Scheduler(
            self.limiter,
            self._on_grant,
            capacity=settings.executor_concurrency,
            lease_ms=settings.visibility_timeout_ms,
        )
        self.attempts = Attempts(settings, redis, scripts, self.batch, executor, self.limiter, group=self.group, consumer=self.consumer)
        self.attempts.outcomes = outcomes
        self._accepted: dict[str, tuple[str, str]] = {}  # job id -> (customer, domain), see accepting()
        self._admissions: set[asyncio.Future[None]] = set()  # see _admit_to_the_end
        self._pacing: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------

    def group_streams(self) -> list[str]:
        return self.streams

    async def start(self) -> None:
        await self.ensure_groups()
        for stream in self.streams:
            self.add_loop(self.read_forever(partial(self._read_turn, stream), what=stream), name=f"read:{stream}")
        self.add_loop(self.keep_and_reclaim(), name="reclaim")
        self._pacing.append(asyncio.create_task(self.scheduler.run(), name="pacing"))
        self._pacing.append(asyncio.create_task(self.scheduler.keep_leases(), name="leases"))
        # Names are unique among live nodes: what is pending under this one was read by a predecessor
        # that died (a worker restarted in its slot, common/workers.py): admit it now, not after the timeout.
        await self._admit_own_pending()

    async def _stop_taking_work(self) -> None:
        """Entries this node read but had not admitted are admitted before it leaves."""
        self.scheduler.stop()
        await super()._stop_taking_work()  # the read and reclaim loops
        if self._admissions:  # admissions run to their end: a grant they made goes to a send
            await asyncio.gather(*self._admissions, return_exceptions=True)
        await self._admit_own_pending()
        if self._pacing:  # the scheduler's loop ends at its next wake-up
            await asyncio.gather(self._pacing[0], return_exceptions=True)

    async def _after_stop(self) -> None:
        await self.attempts.drain(timeout_s=1.0)
        for t in self._pacing:  # leases are kept until the last send is over
            t.cancel()
        await asyncio.gather(*self._pacing, return_exceptions=True)

    @property
    def inflight(self) -> int:
        return self.scheduler.inflight

    @property
    def outcomes(self) -> OutcomeWindow | None:
        """Each send's outcome, for region health (set by the app)."""
        return self.attempts.outcomes

    @outcomes.setter
    def outcomes(self, window: OutcomeWindow | None) -> None:
        self.attempts.outcomes = window

    @property
    def region_states(self) -> Callable[[], Awaitable[dict[str, str]]] | None:
        """Region states for reroutes (set by the app: the coordinator's published view)."""
        return self.attempts.region_states

    @region_states.setter
    def region_states(self, states: Callable[[], Awaitable[dict[str, str]]] | None) -> None:
        self.attempts.region_states = states

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

    def forget_accepting(self, job_id: str) -> None:
        """The job ``accepting`` named gets no stream entry after all (the fast path took it)."""
        self._accepted.pop(job_id, None)

    def send_taken(self, job_id: str, taken: Taken, created: bool | None, first: FirstSend | None = None) -> None:
        """What became of a taken job's submission: ``created`` sends it now (``first`` says how),
        False (a duplicate, or refused) gives the lease and its rate back, None (unknown: the
        submission failed, the job may exist) leaves the lease to expire, which recovers the
        job if there is one."""
        if created and first is not None:
            self.attempts.first_sends[job_id] = first
            self.scheduler.end_take(taken.scope, taken.lease)  # -> _on_grant: the send starts now
            return
        self.scheduler.end_take(taken.scope, None)
        if created is False:
            self.attempts.background(self.limiter.release(taken.scope, taken.lease, refund=True))

    async def _read_turn(self, stream: str) -> None:
        for _stream, entries in await self.read([stream], self.settings.read_batch):
            await self._admit_to_the_end(stream, entries)

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
                    pipe.hmget(keys.job(j), "customer", "spec", "state")  # type: ignore[arg-type]  # redis-py#2399
                rows = dict(zip(unknown, await pipe.execute())) if unknown else {}
            parked: list[tuple[str, str, str]] = []  # job id, domain, customer
            specs: dict[str, str] = {}  # job id -> spec, where read
            for job_id in valid:
                if job_id in hinted:
                    customer, domain = hinted[job_id]
                    parked.append((job_id, domain, customer))
                    continue
                customer, spec, state = rows[job_id]
                specs[job_id] = spec
                if state is None or state in FINAL_STATES:
                    continue  # gone, or another region already won: nothing to send
                try:
                    domain = domain_of(orjson.loads(spec)["url"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.error("job %s has no usable url; dropping its entry", job_id, extra={"job_id": job_id, "region": self.region})
                    continue
                parked.append((job_id, domain, customer or ""))
            scopes = await self.scopes_of(parked, specs)
            if reclaimed:
                parked = await self._still_needed(parked, scopes, {j: entry_id for j, entry_id in jobs})
            by_scope: dict[Scope, list[tuple[str, str]]] = defaultdict(list)
            for job_id, _domain, customer in parked:
                by_scope[scopes[job_id]].append((job_id, customer))
            for scope, pairs in by_scope.items():
                await self.scheduler.admit(scope, pairs)  # and, with room here, takes what may go now
            ids = [entry_id for entry_id, _ in entries]
            acked = self.batch.execute("XACK", stream, self.group, *ids)
            deleted = self.batch.execute("XDEL", stream, *ids)
            await asyncio.gather(acked, deleted)
        finally:
            for entry_id, _ in entries:
                self.reader.drop(stream, entry_id)

    async def scopes_of(self, parked: list[tuple[str, str, str]], specs: dict[str, str]) -> dict[str, Scope]:
        """The scope of each (job id, domain, customer); ``specs``: the jobs' specs already read.

        A domain that keeps one limit per credential needs the job's
        ``Authorization`` header: its jobs' specs not read yet are read here.
        """
        scopes = await self.limiter.scopes_for((d, c) for _, d, c in parked)  # reads the domains' modes
        keyed = [job_id for job_id, d, _ in parked if self.limiter.by_credential(d)]
        if not keyed:
            return {j: scopes[(d, c)] for j, d, c in parked}
        missing = [j for j in keyed if j not in specs]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for j in missing:
                    pipe.hget(keys.job(j), "spec")
                specs = {**specs, **dict(zip(missing, await pipe.execute()))}
        credentials: dict[str, str] = {}
        for j in keyed:
            try:
                headers = orjson.loads(specs[j] or "{}").get("headers")
            except orjson.JSONDecodeError:
                headers = None
            credentials[j] = await self.limiter.credential_of(headers if isinstance(headers, dict) else None)
        scoped = await self.limiter.scopes_for((d, c, credentials.get(j, SHARED)) for j, d, c in parked)
        return {j: scoped[(d, c, credentials.get(j, SHARED))] for j, d, c in parked}

    async def _still_needed(
        self, parked: list[tuple[str, str, str]], scopes: dict[str, Scope], entry_of: dict[str, str]
    ) -> list[tuple[str, str, str]]:
        """The jobs of reclaimed entries that still need the entry's attempt.

        An entry asks for one attempt in this region. If the job holds a
        pacing lease here (an attempt under way), or has an attempt here that
        started after the entry was written, the node that read the entry had
        parked the job before it died, and that attempt is the entry's:
        parking the job again would send it twice.
        """
        leased = await self.limiter.leased([(scopes[j], j) for j, _d, _c in parked])
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
        """Admit the entries still pending under this node's name (when it stops, and when it starts)."""
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

    async def reclaim_stale(self) -> None:
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
        self._inflight.inc()
        self.run_in_flight(self._run_grant(scope, lease, time.perf_counter()))

    async def _run_grant(self, scope: Scope, lease: str, granted_at: float) -> None:
        try:
            await self.attempts.run(scope, lease, granted_at)
        finally:
            self.scheduler.done(scope, lease)
            self._inflight.dec()

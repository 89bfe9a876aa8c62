"""The limit of each scope, kept in Redis and decided by Lua (``scripts/*.lua``).

:class:`Limiter` is the only code that touches pacing keys. It runs the
scripts and keeps a region's *ready set* (``pacing:ready:<region>``: each
scope with work, scored by when it may grant next) in step with them.

The ready set lives outside the domains' hash tags, so it is updated after
each script, not inside it. Two rules keep it from losing a scope:

- whoever adds a waiting job adds the scope afterwards (``ZADD LT``: never
  later than it already is);
- whoever drops or postpones a scope because its queue looked empty looks
  again afterwards, and puts it back if a job arrived in between.

A node that dies between a script and its ready-set update leaves at worst a
stale score (a spurious wake-up) or an unacknowledged stream entry, which
another node reclaims and admits again (admission is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from ..common import keys, scripting
from ..common.batching import Batcher
from ..common.config import Settings
from .hints import TargetHints
from .scope import CREDENTIAL_MODE, CUSTOMER_MODE, SHARED, SHARED_MODE, Scope, credential_scope, mode_of

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

SCRIPT_NAMES = ("admit", "grant", "take", "release", "renew", "late", "describe", "evict", "space", "respace")

OK, PAUSED, BUSY, EMPTY = "ok", "paused", "busy", "empty"

# space.lua records a send this far ahead at most (ms): how long its answer lately took to come
# back here (see Limiter.until_spaced), the slowest recent one, fading by half every AHEAD_HALF_LIFE_S
# (in time, not answers: one slow answer on a quiet node must not hold a low-rate domain back for long).
MAX_AHEAD_MS = 250.0
AHEAD_HALF_LIFE_S = 0.5
SCOPE_KEYS_KEPT = 4096  # scopes whose keys a Limiter keeps written (_keys)


def _now_ms() -> float:
    return time.time() * 1000


@dataclass(frozen=True)
class PacingPolicy:
    """Cluster-wide defaults and ceilings, passed to every script call."""

    default_rps: float = 2.0
    default_max_concurrent: int = 2
    max_rps: float = 100.0
    max_concurrent: int = 64
    min_rps: float = 0.01
    rate_margin: float = 0.01
    tolerance_ms: float = 5.0
    window_margin_ms: float = 20.0
    handoff_grace_ms: float = 50.0
    header_ttl_s: float = 3600.0
    max_pause_s: float = 3600.0

    @classmethod
    def from_settings(cls, s: Settings) -> PacingPolicy:
        return cls(
            default_rps=s.pacing_default_rps,
            default_max_concurrent=s.pacing_default_max_concurrent,
            max_rps=s.pacing_max_rps,
            max_concurrent=s.pacing_max_concurrent,
            min_rps=s.pacing_min_rps,
            rate_margin=s.pacing_rate_margin,
            tolerance_ms=s.pacing_tolerance_ms,
            window_margin_ms=s.pacing_window_margin_ms,
            handoff_grace_ms=s.pacing_handoff_grace_ms,
            header_ttl_s=s.pacing_header_ttl_s,
            max_pause_s=s.pacing_max_pause_s,
        )

    def args(self, now_ms: float | None = None) -> list[Any]:
        return ["" if now_ms is None else repr(float(now_ms)), *self._args_after_now]

    @cached_property
    def _args_after_now(self) -> tuple[Any, ...]:  # the same for every call: written once (a few a job)
        return (
            repr(float(self.default_rps)),
            self.default_max_concurrent,
            repr(float(self.max_rps)),
            self.max_concurrent,
            int(self.header_ttl_s * 1000),
            repr(float(self.rate_margin)),
            repr(float(self.tolerance_ms)),
            repr(float(self.handoff_grace_ms)),
        )


def job_of(lease: str) -> str:
    """The job a lease (``<job id>@<n>``, one per grant) is for."""
    job, sep, n = lease.rpartition("@")
    return job if sep and n.isdigit() else lease


@dataclass(slots=True)
class Grant:
    status: str  # OK, PAUSED, BUSY or EMPTY
    next_ms: int  # when the scope may grant again (-1: nothing waits or runs)
    leases: list[str]  # one per granted job; release and renew by lease
    recovered: int  # expired leases put back in the queue by this call
    waiting: int
    added: int = 0  # admit_and_grant: how many of the jobs it was given were new to the queue

    @property
    def job_ids(self) -> list[str]:
        return [job_of(lease) for lease in self.leases]


@dataclass(frozen=True)
class Evicted:
    """What ``evict.lua`` took out of a region's queue of a scope: still there until this call."""

    waiting: list[str]  # job ids that were waiting
    leases: list[str]  # leases that were held


@dataclass(frozen=True)
class ScopeView:
    """A scope's effective limits and their sources, for operators."""

    scope: Scope
    rps: float
    rps_source: str  # default, config or header
    max_concurrent: int
    max_concurrent_source: str
    burst: int
    ceiling_rps: float
    ceiling_max_concurrent: int
    paused_until_ms: int  # 0 when not paused
    next_grant_ms: int
    per_customer: bool
    rps_clamped: bool  # the source asked for more than the ceiling
    max_concurrent_clamped: bool
    waiting: dict[str, int]
    running: dict[str, int]
    circuit: str = "closed"  # closed, open or half_open (a probe may go or is out)
    circuit_open_until_ms: int = 0
    per_credential: bool = False  # the domain keeps one limit per credential (scope: credential)

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.scope.domain,
            "scope": self.scope.who,
            "mode": "per_customer" if self.per_customer else "per_credential" if self.per_credential else "shared",
            "rps": self.rps,
            "rps_source": self.rps_source,
            "rps_clamped": self.rps_clamped,
            "max_concurrent": self.max_concurrent,
            "max_concurrent_source": self.max_concurrent_source,
            "max_concurrent_clamped": self.max_concurrent_clamped,
            "burst": self.burst,
            "ceiling": {"rps": self.ceiling_rps, "max_concurrent": self.ceiling_max_concurrent},
            "paused_until_ms": self.paused_until_ms or None,
            "next_grant_ms": self.next_grant_ms,
            "waiting": self.waiting,
            "running": self.running,
            "circuit": self.circuit,
            "circuit_open_until_ms": self.circuit_open_until_ms or None,
        }


def _num(text: str) -> float | int:
    f = float(text)
    return int(f) if f.is_integer() else f


class Limiter:
    """Pacing operations of one region's nodes (``region`` None: read-only use).

    ``regions`` are every configured region: a scope's queues in all of them
    are served in one fair order.
    """

    def __init__(
        self,
        redis: RedisClient,
        policy: PacingPolicy,
        region: str | None,
        regions: Sequence[str] = (),
        *,
        mode_cache_s: float = 1.0,
        batch: Batcher | None = None,
    ) -> None:
        self.redis = redis
        self.policy = policy
        self.region = region
        self.regions = tuple(regions) or ((region,) if region else ())
        self._scripts = {name: scripting.register(redis, f"pacing/{name}") for name in SCRIPT_NAMES}
        # One Redis: submission and take in one script (common/scripts/accept.lua); None on a cluster.
        self.accept_script = None if isinstance(redis, RedisCluster) else scripting.register(redis, "accept")
        # The job path's calls (admit, grant, release, the ready set), one pipeline per loop
        # turn; shared with the caller's own per-job calls when it passes its Batcher.
        self._batch = batch or Batcher(redis)
        self._mode_cache_s = mode_cache_s
        self._modes: dict[str, tuple[float, str]] = {}  # domain -> (fetched at, mode: see scope.py)
        self._credential_key: bytes | None = None  # credential scopes' keyed hash (credential_of)
        self._refreshing: dict[str, asyncio.Task[None]] = {}  # domains whose mode cached_scope reads again
        self._late_running: set[Scope] = set()  # scopes with a late report in flight
        self._late_again: dict[Scope, float] = {}  # scope -> lateness reported meanwhile (ms)
        self._recording: set[asyncio.Future[Any]] = set()  # sends recorded again as they leave (until_spaced)
        self._ahead = (0.0, 0.0)  # the slowest recent answer of space.lua (ms), and when (perf_counter): until_spaced
        self._scope_keys: dict[tuple[Scope, str], tuple[str, ...]] = {}  # each scope's keys, written once (several calls a job)

    # -- keys --------------------------------------------------------------

    def _keys(self, scope: Scope, region: str | None = None) -> tuple[str, ...]:
        region = region or self.region
        assert region is not None, "this Limiter has no region"
        known = self._scope_keys.get((scope, region))
        if known is not None:
            return known
        d, who = scope.domain, scope.who
        found = (
            keys.pacing_conf(d),
            keys.pacing_limit(d, who),
            keys.pacing_wait(d, who, region),
            keys.pacing_fair(d, who),
            keys.pacing_running(d, who, region),
            *(keys.pacing_wait(d, who, r) for r in self.regions if r != region),
        )
        if len(self._scope_keys) >= SCOPE_KEYS_KEPT:  # many scopes (per customer, per credential): start again
            self._scope_keys.clear()
        self._scope_keys[(scope, region)] = found
        return found

    @property
    def ready_key(self) -> str:
        assert self.region is not None
        return keys.pacing_ready(self.region)

    # -- scopes ------------------------------------------------------------

    async def scopes_for(self, jobs: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], Scope]:
        """The scope of each (domain, customer[, credential]): shared unless the domain is per customer
        (the customer's) or per credential (``credential``: the job's, from :meth:`credential_of`; SHARED
        or left out for a job without one).

        Each domain's mode is read from Redis at most once per ``mode_cache_s``.
        """
        items = list(jobs)
        await self._read_modes({item[0] for item in items})
        return {item: self._scope(item[0], item[1], item[2] if len(item) > 2 else SHARED) for item in items}

    def by_credential(self, domain: str) -> bool:
        """Whether the domain keeps one limit per credential, as last read here (:meth:`scopes_for`)."""
        return self._modes.get(domain, (0.0, SHARED_MODE))[1] == CREDENTIAL_MODE

    async def credential_of(self, headers: Mapping[str, str] | None) -> str:
        """The scope of a job's credential (``scope.credential_scope``), with this deployment's key
        (created once in Redis by whichever node needs it first)."""
        if self._credential_key is None:
            name = keys.pacing_credential_key()
            await self.redis.set(name, secrets.token_hex(32), nx=True)
            stored = await self.redis.get(name)
            assert stored is not None
            self._credential_key = bytes.fromhex(stored)
        return credential_scope(self._credential_key, headers)

    async def _read_modes(self, domains: Iterable[str]) -> None:
        now = time.monotonic()
        stale = sorted(d for d in domains if now - self._modes.get(d, (-1e9, SHARED_MODE))[0] > self._mode_cache_s)
        if not stale:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in stale:
                pipe.hmget(keys.pacing_conf(d), ["per_customer", "scope"])
            rows = await pipe.execute()
        for d, (per_customer, scope) in zip(stale, rows):
            self._modes[d] = (now, mode_of(per_customer, scope))
        if len(self._modes) > 10_000:  # bounded: drop the oldest half
            for d, _ in sorted(self._modes.items(), key=lambda kv: kv[1][0])[:5_000]:
                del self._modes[d]

    def _scope(self, domain: str, customer: str, credential: str) -> Scope:
        mode = self._modes[domain][1]
        if mode == CUSTOMER_MODE:
            return Scope(domain, customer)
        if mode == CREDENTIAL_MODE:
            return Scope(domain, credential or SHARED)
        return Scope(domain, SHARED)

    # -- the job path --------------------------------------------------------

    async def admit(
        self,
        scope: Scope,
        jobs: Sequence[tuple[str, str]],
        *,
        now_ms: float | None = None,
        on_queued: Callable[[Scope, int], None] | None = None,
    ) -> int:
        """Queue (job id, customer) pairs in the scope; returns how many were new.

        ``on_queued(scope, next grant ms)`` is called when jobs wait, before the
        ready set is written: the node's own scheduler may ask the scope for
        jobs meanwhile, without reading the ready set first.
        """
        flat = [x for pair in jobs for x in pair]
        added, waiting, next_ms = await self._batch.script(
            self._scripts["admit"], keys=self._keys(scope), args=[*self.policy.args(now_ms), len(jobs), *flat]
        )
        if waiting:
            if on_queued is not None:
                on_queued(scope, int(next_ms))
            await self._batch.execute("ZADD", self.ready_key, "LT", int(next_ms), scope.member)
        return int(added)

    async def admit_and_grant(
        self,
        scope: Scope,
        jobs: Sequence[tuple[str, str]],
        *,
        inflight: int,
        want: int,
        lease_ms: int,
        now_ms: float | None = None,
        on_granted: Callable[[Grant], None] | None = None,
    ) -> Grant:
        """``admit`` then ``grant`` in one script: the jobs this node may send now, and how many of ``jobs`` were new.

        One round trip instead of two (and no ready-set read) between a job's
        admission and its send, when the admitting node has room for it.
        """
        flat = [x for pair in jobs for x in pair]
        added, waiting, next_ms, status, leases, recovered = await self._batch.script(
            self._scripts["admit"], keys=self._keys(scope), args=[*self.policy.args(now_ms), len(jobs), *flat, inflight, want, lease_ms]
        )
        grant = Grant(status, int(next_ms), list(leases), int(recovered), int(waiting), int(added))
        if on_granted is not None:
            on_granted(grant)
        await self._reindex(scope, grant.waiting, grant.next_ms)
        return grant

    async def grant(
        self,
        scope: Scope,
        *,
        inflight: int,
        want: int,
        lease_ms: int,
        now_ms: float | None = None,
        on_granted: Callable[[Grant], None] | None = None,
    ) -> Grant:
        """Jobs this node may send now (at most ``want``), each leased for ``lease_ms``.

        ``on_granted(grant)`` is called before the ready set is written, so the
        sends need not wait for that round trip.
        """
        status, next_ms, leases, recovered, waiting = await self._batch.script(
            self._scripts["grant"], keys=self._keys(scope), args=[*self.policy.args(now_ms), inflight, want, lease_ms]
        )
        grant = Grant(status, int(next_ms), list(leases), int(recovered), int(waiting))
        if on_granted is not None:
            on_granted(grant)
        await self._reindex(scope, grant.waiting, grant.next_ms)
        return grant

    def cached_scope(self, domain: str, customer: str) -> Scope | None:
        """The scope of (domain, customer) as this node knows it, without a round trip.

        None when the domain's mode was never read here, or when the domain keeps
        one limit per credential (its jobs take the usual way: the scope needs
        the job's header). A mode older than ``mode_cache_s`` is still answered
        (as :meth:`scopes_for` would have a moment ago) while it is read again
        in the background.
        """
        known = self._modes.get(domain)
        if known is None or time.monotonic() - known[0] > self._mode_cache_s:
            if domain not in self._refreshing:
                self._refreshing[domain] = asyncio.get_running_loop().create_task(self._refresh_mode(domain))
            if known is None:
                return None
        if known[1] == CREDENTIAL_MODE:
            return None
        return self._scope(domain, customer, SHARED)

    async def _refresh_mode(self, domain: str) -> None:
        try:
            await self._read_modes([domain])
        except Exception:
            log.debug("reading the mode of %s failed", domain, exc_info=True)
        finally:
            self._refreshing.pop(domain, None)

    def take_keys(self, scope: Scope) -> list[str]:
        """The keys of accept.lua after ``submit.lua``'s: the ready set, then the scope's (see common/scripts/accept.lua)."""
        return [self.ready_key, *self._keys(scope)]

    def take_args(self, scope: Scope, customer: str, *, inflight: int, lease_ms: int, now_ms: float | None = None) -> list[Any]:
        """The arguments of accept.lua after ``submit.lua``'s: see common/scripts/accept.lua."""
        return [*self.policy.args(now_ms), customer, inflight, lease_ms, scope.member]

    async def take(
        self, scope: Scope, job_id: str, customer: str, *, inflight: int, lease_ms: int, now_ms: float | None = None
    ) -> str | None:
        """The lease ``take.lua`` gives a job being accepted now, or None when the scope would not
        grant it at once (it then takes the usual way). Batched: awaited at once, the call joins
        the pipeline of this loop turn."""
        status, lease = await self._batch.script(
            self._scripts["take"], keys=self._keys(scope), args=[*self.policy.args(now_ms), job_id, customer, inflight, lease_ms]
        )
        return lease if status == OK else None

    def watch_lease(self, scope: Scope, lease_until_ms: int) -> Awaitable[Any]:
        """Index ``scope`` in the ready set by the expiry of a lease take.lua gave (LT: never later than it is).

        Should this node die before releasing the lease, the next grant on
        the scope (due then) puts the job back at the front of its queue.
        """
        return self._batch.execute("ZADD", self.ready_key, "LT", lease_until_ms, scope.member)

    async def release(
        self,
        scope: Scope,
        lease: str,
        hints: TargetHints | None = None,
        *,
        requeue: bool = False,
        refund: bool = False,
        now_ms: float | None = None,
    ) -> None:
        """The attempt of a granted job is over (``requeue``: it never happened; queue it again;
        ``refund``: it never will, and the rate gets its interval back)."""
        h = hints or TargetHints()
        one_redis = self.accept_script is not None  # the ready set may join the script's keys (release.lua ARGV[17])
        waiting, next_ms, _running = await self._batch.script(
            self._scripts["release"],
            keys=[*self._keys(scope), self.ready_key] if one_redis else self._keys(scope),
            args=[
                *self.policy.args(now_ms),
                lease,
                "" if h.rps is None else repr(float(h.rps)),
                "" if h.max_concurrent is None else h.max_concurrent,
                "" if h.pause_until_ms is None else h.pause_until_ms,
                "1" if requeue else "",
                "1" if refund else "",
                h.answer,
                *((scope.member,) if one_redis else ()),
            ],
        )
        if waiting and not one_redis:
            # A faster rate or a job put back may make the scope due sooner.
            await self._batch.execute("ZADD", self.ready_key, "LT", int(next_ms), scope.member)

    async def space(self, scope: Scope, lease: str, *, now_ms: float | None = None, ahead_ms: float = 0.0) -> int:
        """Record a send leaving now (``ahead_ms`` later: when it will leave), or say how long it must wait (ms) first (``space.lua``)."""
        return int(await self._space(scope, lease, now_ms, ahead_ms))

    def _space(self, scope: Scope, lease: str, now_ms: float | None = None, ahead_ms: float = 0.0) -> asyncio.Future[Any]:
        d, who = scope.domain, scope.who
        args = [*self.policy.args(now_ms), lease, repr(float(self.policy.window_margin_ms)), repr(float(ahead_ms))]
        return self._batch.script(
            self._scripts["space"], keys=[keys.pacing_conf(d), keys.pacing_limit(d, who), keys.pacing_sent(d, who)], args=args
        )

    def _respace(self, scope: Scope, lease: str, now_ms: float | None = None) -> asyncio.Future[Any]:
        """Move a send's record to now (``respace.lua``): 1, or 0 when the record is gone (``space.lua`` records it then)."""
        args = ["" if now_ms is None else repr(float(now_ms)), lease]
        return self._batch.script(self._scripts["respace"], keys=[keys.pacing_sent(scope.domain, scope.who)], args=args)

    async def until_spaced(self, scope: Scope, lease: str, *, max_wait_s: float) -> float:
        """Wait until the send may leave (see ``space.lua``); returns the seconds waited.

        Bounded: after ``max_wait_s`` the send leaves anyway (the grant already
        paced it; this only absorbs jitter), and a Redis error lets it leave.

        The send leaves when the answer of ``space.lua`` is back, which on a
        busy node (a loop turn's batch, a process the machine put aside) is
        some milliseconds after the script ran. It is recorded that much
        ahead: as far as the answers of this process have lately taken (their
        slowest, fading by half every :data:`AHEAD_HALF_LIFE_S`), at most :data:`MAX_AHEAD_MS`. A record ahead of its
        send only makes the window stricter. An answer slower than that by
        more than the tolerance means the send leaves later than recorded: it
        is recorded again as it leaves, so the sends after it count from then
        (``respace.lua``, which moves the record; ``space.lua`` when the record
        is gone by then).
        """
        waited = 0.0
        while waited < max_wait_s:
            asked = time.perf_counter()
            ahead = self.ahead_ms(asked)
            try:
                wait_ms = await self.space(scope, lease, ahead_ms=ahead)
            except Exception:
                log.warning("could not space a send of %s; it leaves now", scope, exc_info=True)
                return waited
            answered = time.perf_counter()
            took = (answered - asked) * 1000
            if took > self.ahead_ms(answered):
                self._ahead = (min(MAX_AHEAD_MS, took), answered)
            if wait_ms <= 0:
                if took > ahead + self.policy.tolerance_ms:
                    self._record_again(scope, lease)
                return waited
            pause = min(wait_ms / 1000.0, max_wait_s - waited)
            await asyncio.sleep(pause)
            waited += pause
        return waited

    def left_late(self, scope: Scope, lease: str, late_ms: float) -> None:
        """The send left ``late_ms`` after :meth:`until_spaced` let it go (its connection came first: a name to
        look up, TCP, TLS). Later than the tolerance, it is recorded again as it leaves (``respace.lua``, batched,
        no task), so that the sends after it count from when it reached the wire, not from when it was allowed."""
        if late_ms > self.policy.tolerance_ms:
            self._record_again(scope, lease)

    def ahead_ms(self, at: float | None = None) -> float:
        """How far ahead ``space.lua`` records a send of this process now (ms; ``at``: a ``perf_counter`` time)."""
        slowest, when = self._ahead
        if slowest <= 0.0:
            return 0.0
        elapsed = max(0.0, (time.perf_counter() if at is None else at) - when)
        return float(slowest * 0.5 ** (elapsed / AHEAD_HALF_LIFE_S))

    async def circuit_open(self, scope: Scope) -> bool:
        """Whether the scope's circuit breaker is open or half-open (``release.lua`` opens it; see ``circuit()``)."""
        return await circuit_open(self.redis, scope.domain, [scope.who])

    def _record_again(self, scope: Scope, lease: str) -> None:
        """The lease is in the log: its record moved to now (batched, no task); recorded anew if it is gone."""
        recording = self._respace(scope, lease)
        self._recording.add(recording)

        def moved(done: asyncio.Future[Any]) -> None:
            self._recorded(done)
            if not done.cancelled() and done.exception() is None and not int(done.result()):
                again = self._space(scope, lease)  # aged out meanwhile: space.lua, as before respace.lua
                self._recording.add(again)
                again.add_done_callback(self._recorded)

        recording.add_done_callback(moved)

    def _recorded(self, recording: asyncio.Future[Any]) -> None:
        self._recording.discard(recording)
        if not recording.cancelled() and recording.exception() is not None:
            log.warning("could not record a late send again", exc_info=recording.exception())

    async def pause(self, scope: Scope, until_ms: int) -> None:
        """An operator's pause: nothing is granted before ``until_ms`` (a pause only ever extends)."""
        limit = keys.pacing_limit(scope.domain, scope.who)
        current = float(await self.redis.hget(limit, "pause_until") or 0)  # type: ignore[misc]  # redis-py#2399
        if until_ms > current:
            await self.redis.hset(limit, "pause_until", str(until_ms))  # type: ignore[misc]  # redis-py#2399

    async def resume(self, scope: Scope) -> None:
        """An operator's resume: the pause (and a Retry-After's) ends now, and every region looks at the scope at once."""
        await self.redis.hdel(keys.pacing_limit(scope.domain, scope.who), "pause_until")  # type: ignore[misc]  # redis-py#2399
        now = int(_now_ms())
        for region in self.regions:
            if await self.redis.zcard(keys.pacing_wait(scope.domain, scope.who, region)):
                await self.redis.zadd(keys.pacing_ready(region), {scope.member: now}, lt=True)

    async def renew(self, scope: Scope, leases: Sequence[str], lease_ms: int, *, now_ms: float | None = None) -> int:
        if not leases:
            return 0
        args = [*self.policy.args(now_ms), lease_ms, *leases]
        return int(await self._scripts["renew"](keys=self._keys(scope), args=args))

    async def leased(self, jobs: Sequence[tuple[Scope, str]]) -> set[str]:
        """Of (scope, job id) pairs, the jobs holding a lease in this region (an attempt under way)."""
        wanted: dict[Scope, set[str]] = {}
        for scope, job_id in jobs:
            wanted.setdefault(scope, set()).add(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in wanted:
                pipe.zrange(keys.pacing_running(scope.domain, scope.who, self.region or ""), 0, -1)
            running = await pipe.execute() if wanted else []
        return {job_of(lease) for scope, leases in zip(wanted, running) for lease in leases if job_of(lease) in wanted[scope]}

    async def report_late(self, scope: Scope, late_ms: float, *, now_ms: float | None = None) -> None:
        """A granted send left ``late_ms`` after its grant (at ``now_ms``): the scope's next
        grant waits one interval from then.

        One report per scope is in flight at a time: reports that arrive
        meanwhile are folded into one more call when it returns (a later
        report subsumes earlier ones), so a busy node sends a burst of late
        sends' reports as one or two script calls, not one each.
        """
        if self.fold_late(scope, late_ms):
            return
        self._late_running.add(scope)
        try:
            while True:
                await self._batch.script(
                    self._scripts["late"], keys=self._keys(scope), args=[*self.policy.args(now_ms), repr(float(late_ms))]
                )
                if scope not in self._late_again:
                    break
                late_ms, now_ms = self._late_again.pop(scope), None
        finally:
            self._late_running.discard(scope)
            self._late_again.pop(scope, None)

    def fold_late(self, scope: Scope, late_ms: float) -> bool:
        """Fold a late send into the report in flight for its scope, if there is one (True): nothing more to call."""
        if scope not in self._late_running:
            return False
        self._late_again[scope] = max(self._late_again.get(scope, 0.0), late_ms)
        return True

    async def _reindex(self, scope: Scope, waiting: int, next_ms: int) -> None:
        member = scope.member
        if waiting:
            await self._batch.execute("ZADD", self.ready_key, next_ms, member)
            return
        # Nothing waits: keep the scope only to look after running leases.
        # Then look again (in the same round trip, after the write): a job
        # admitted since the script ran would have been hidden by that write.
        if next_ms >= 0:
            written = self._batch.execute("ZADD", self.ready_key, next_ms, member)
        else:
            written = self._batch.execute("ZREM", self.ready_key, member)
        counted = self._batch.execute("ZCARD", keys.pacing_wait(scope.domain, scope.who, self.region or ""))
        _written, waiting_now = await asyncio.gather(written, counted)
        if waiting_now:
            await self._batch.execute("ZADD", self.ready_key, "LT", int(_now_ms()), member)

    async def due(self, *, now_ms: float, limit: int, offset: int = 0) -> tuple[list[tuple[Scope, float]], float | None]:
        """Scopes due by ``now_ms`` (a page of them), and the score of the first one not yet due."""
        # Batched (the pass's one read joins the loop turn's pipeline): the replies come as a flat member, score list.
        due, upcoming = await asyncio.gather(
            self._batch.execute("ZRANGEBYSCORE", self.ready_key, "-inf", now_ms, "WITHSCORES", "LIMIT", offset, limit),
            self._batch.execute("ZRANGEBYSCORE", self.ready_key, f"({now_ms}", "+inf", "WITHSCORES", "LIMIT", 0, 1),
        )
        return [(Scope.from_member(m), float(s)) for m, s in zip(due[0::2], due[1::2])], (float(upcoming[1]) if upcoming else None)

    # -- a region that is down (coordinator/evacuate.py) ----------------------

    async def held_in(self, region: str, *, limit: int) -> list[tuple[Scope, list[str], list[tuple[str, float]]]]:
        """What ``region``'s queues hold: per scope with work, its waiting job ids and its leases
        (with their expiry, ms); at most ``limit`` waiting jobs per scope."""
        scopes = [Scope.from_member(m) for m in await self.redis.zrange(keys.pacing_ready(region), 0, -1)]
        if not scopes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.zrange(keys.pacing_wait(scope.domain, scope.who, region), 0, limit - 1)
                pipe.zrange(keys.pacing_running(scope.domain, scope.who, region), 0, -1, withscores=True)
            rows = await pipe.execute()
        return [(scope, waiting, running) for scope, waiting, running in zip(scopes, rows[0::2], rows[1::2]) if waiting or running]

    async def evict(
        self, scope: Scope, region: str, waiting: Sequence[str], leases: Sequence[tuple[str, bool]], *, now_ms: float | None = None
    ) -> Evicted:
        """Take waiting jobs and leases (``(lease, force)``: force takes it before it expires) out of
        ``region``'s queue of ``scope``; returns what was still there and is now taken."""
        args = [
            *self.policy.args(now_ms),
            len(waiting),
            *waiting,
            len(leases),
            *(x for lease, force in leases for x in (lease, "1" if force else "")),
        ]
        taken_waiting, taken_leases = await self._scripts["evict"](keys=self._keys(scope, region), args=args)
        return Evicted(list(taken_waiting), list(taken_leases))

    # -- operators -------------------------------------------------------------

    async def describe(self, domain: str, who: str = SHARED, regions: Sequence[str] = ()) -> ScopeView:
        scope = Scope(domain, who)
        region = regions[0] if regions else (self.region or "-")
        raw = await self._scripts["describe"](keys=self._keys(scope, region), args=self.policy.args())
        waiting: dict[str, int] = {}
        running: dict[str, int] = {}
        if regions:
            async with self.redis.pipeline(transaction=False) as pipe:
                for r in regions:
                    pipe.zcard(keys.pacing_wait(domain, who, r))
                    pipe.zcard(keys.pacing_running(domain, who, r))
                counts = await pipe.execute()
            for i, r in enumerate(regions):
                waiting[r], running[r] = int(counts[2 * i]), int(counts[2 * i + 1])
        return ScopeView(
            scope=scope,
            rps=float(raw[0]),
            rps_source=raw[1],
            max_concurrent=int(_num(raw[2])),
            max_concurrent_source=raw[3],
            burst=int(_num(raw[4])),
            ceiling_rps=float(raw[5]),
            ceiling_max_concurrent=int(_num(raw[6])),
            paused_until_ms=int(_num(raw[7])),
            next_grant_ms=int(_num(raw[8])),
            per_customer=raw[11] == "1",
            rps_clamped=raw[12] == "1",
            max_concurrent_clamped=raw[13] == "1",
            waiting=waiting,
            running=running,
            circuit=raw[14],
            circuit_open_until_ms=int(_num(raw[15])),
            per_credential=raw[16] == "credential",
        )

    async def scopes_of(self, domain: str, regions: Sequence[str]) -> list[str]:
        """Scopes of a domain that have work (in any of ``regions``' ready sets)."""
        found: set[str] = set()
        prefix = f"{domain}|"
        for r in regions:
            async for member in self.redis.zscan_iter(keys.pacing_ready(r), match=f"{_glob_escape(prefix)}*"):
                m = member[0] if isinstance(member, tuple) else member
                found.add(Scope.from_member(m).who)
        return sorted(found)


async def circuit_open(redis: RedisClient, domain: str, whos: Iterable[str]) -> bool:
    """Whether the circuit breaker of any of a domain's scopes ``whos`` (SHARED, a customer...) is open or half-open."""
    async with redis.pipeline(transaction=False) as pipe:
        for who in whos:
            pipe.hget(keys.pacing_limit(domain, who), "cb_open_until")
        found = await pipe.execute()
    return any(float(v or 0) > 0 for v in found)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def conf_fields(conf: Mapping[str, Any]) -> dict[str, str]:
    """A domain's overrides as stored in its conf hash."""
    out: dict[str, str] = {}
    for k, v in conf.items():
        if isinstance(v, bool):
            out[k] = "1" if v else "0"
        else:
            out[k] = repr(float(v)) if isinstance(v, float) else str(v)
    return out

"""A node's pacer: hands out the region's waiting jobs as their limits allow.

One loop per node. Each pass reads the scopes that are due from the region's
ready set and asks them all for jobs at once (``grant.lua``, one call each,
one round trip for all); each granted job's lease goes to ``on_grant`` (the
worker sends the job, then calls ``done``). It then sleeps until the next
scope is due, at most ``poll_s`` (other nodes' work shows up within that), or
until woken: by admission on this node, or by one of its sends finishing. A
ready set found empty means the region has nothing waiting and nothing
running (a running lease keeps its scope there): the pass then sleeps
``idle_poll_s`` instead. Work admitted here wakes it at once; work another
node queued but cannot send (its slots full), or an operator's resume, is
found within that. An idle node's pacer makes a fifth of the passes it made
polling every ``poll_s``: an idle edge's CPU went from 16 to 5 ms a second.

Passes start on a grid of the clock, ``tick_ms`` apart (half the pacing
tolerance: 2.5 ms). Paced scopes fall due at their own moments, and one pass
each would start one send at a time: each of its steps (the grant, the
attempt's record, its place in the window, its end and release) a Redis
round trip and a wake-up of its own. On the grid, the scopes that fell due
within a tick are asked together and their sends go together, so each step
is one write for all of them. Half the tolerance late, a grant still keeps
its scope's schedule (a GCRA grant may come up to the tolerance after its
due moment without losing the interval). Ten domains at 100/s each, one edge
sending their backlog: 3.5-3.7 Redis round trips a send -> 2.2-2.6, CPU a
send 827-867 -> 611-666 µs on the edge and 428-461 -> 327-386 in Redis
(`bench/README.md`). What is not paced does not wait for the grid: a job that
may go at its admission, and a send slot freed for a scope that waited for
one (at this node's cap for it, or the node short of slots), wake the pass
at once.

Admission on this node goes through the scheduler (``admit``): with free
send slots, the script that queues the jobs also grants the ones that may go
now (``admit.lua`` runs ``grant.lua``'s logic), so at light load a job goes
from its stream entry to its send with one pacing round trip instead of four
(``admit.lua``, the ready-set write, ``due()``, ``grant.lua``). Without room,
a scope just queued in and due is asked first in the next pass, before the
ready set is read (``admitted``). The ready set is still written and read as
before; it only stops being on the job's path. Grant calls may be in flight
at once (the pass, admission on each stream), but one per scope, so the
count of a scope's sends here is exact (its per-node cap holds); each
reserves the send slots it asks for, so the node's cap holds.

A node asks a scope for at most as many jobs as it has free send slots, so
waiting costs nothing here: a job that may not go yet stays in Redis. A scope
at this node's per-node cap is skipped without a Redis call until one of the
node's sends for it finishes (or for ``blocked_s``, so limits raised
elsewhere are seen within a second).

Leases: every ``lease_ms / 3`` the node renews the leases of everything it
is sending, so a live node keeps its jobs however long the sends take.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass

import redis.asyncio as aioredis

from ..common.metrics import PACING_GRANTS, PACING_LEASES_RECOVERED, labelled
from .limiter import BUSY, Grant, Limiter
from .scope import Scope

log = logging.getLogger(__name__)

OnGrant = Callable[[Scope, str], None]
DUE_SLACK_MS = 1.0  # grant.lua decides on Redis's clock, within the pacing tolerance (5 ms)
_REDIS_DOWN = (aioredis.ConnectionError, aioredis.TimeoutError, ConnectionError, OSError)


def until_tick_s(now_ms: float, tick_ms: float) -> float:
    """Seconds from ``now_ms`` to the next point of a ``tick_ms`` grid of the clock (0 on one, or without a grid)."""
    if tick_ms <= 0:
        return 0.0
    return (-now_ms % tick_ms) / 1000


@dataclass(eq=False)  # compared and hashed as itself
class Scheduler:
    limiter: Limiter
    on_grant: OnGrant
    _: KW_ONLY
    capacity: int
    lease_ms: int
    poll_s: float = 0.05
    idle_poll_s: float = 0.25  # the sleep after a pass found the ready set empty (never shorter than poll_s)
    page: int = 500
    max_pages: int = 20
    blocked_s: float = 1.0
    max_per_grant: int = 32
    tick_ms: float = -1.0  # passes start on this grid of the clock (ms; 0: at once); -1: half the pacing tolerance

    def __post_init__(self) -> None:
        self._inflight: dict[Scope, set[str]] = {}  # scope -> leases held here
        self._count = 0
        self._granting: set[Scope] = set()  # scopes with a grant call in flight (one at a time each)
        self._taking: set[Scope] = set()  # of those, scopes with a take in flight (reserve_take .. end_take)
        self._asked_while_taking: set[Scope] = set()  # scopes a pass skipped for a take in flight
        self._reserved = 0  # send slots that grant calls in flight may fill
        self._short_of_room = False  # a pass stopped for want of free slots
        self._blocked: dict[Scope, float] = {}  # scope -> monotonic time to look again
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # the pass is wanted for slots freed or a scope due now: no wait for the grid
        self._hot: set[Scope] = set()  # scopes admitted here and due: asked before the ready set is read
        self._stopping = False
        self._region = self.limiter.region or ""
        if self.tick_ms < 0:
            self.tick_ms = self.limiter.policy.tolerance_ms / 2

    # -- what the worker tells us ----------------------------------------------

    @property
    def inflight(self) -> int:
        return self._count

    def held(self) -> dict[Scope, set[str]]:
        return {s: set(j) for s, j in self._inflight.items() if j}

    def wake(self) -> None:
        self._wake.set()

    def _urge(self) -> None:
        """Wake the pass for send slots just freed, or a scope just admitted and due: it starts at once, off the grid."""
        self._urgent.set()
        self._wake.set()

    def admitted(self, scope: Scope, next_ms: int) -> None:
        """This node queued jobs in ``scope``, which may grant at ``next_ms``: ask it first if due."""
        if next_ms <= time.time() * 1000 + DUE_SLACK_MS:
            self._hot.add(scope)
            self._urge()
        else:
            self._wake.set()

    async def admit(self, scope: Scope, jobs: Sequence[tuple[str, str]]) -> int:
        """Queue jobs this node read in ``scope`` and, if it has free send slots,
        take the ones that may go now in the same script; returns how many were new.

        Without room here (or with the scope found busy a moment ago, or a
        grant for it already in flight) the jobs are only queued, and the scope
        is asked first in the next pass if due.
        """
        if self._stopping or self._free() <= 0 or scope in self._granting or self._blocked.get(scope, 0.0) > time.monotonic():
            return await self.limiter.admit(scope, jobs, on_queued=self.admitted)
        grant = await self._grant(scope, jobs)
        if grant.status == BUSY:
            self._blocked[scope] = time.monotonic() + self.blocked_s
        elif grant.waiting and grant.next_ms <= time.time() * 1000 + DUE_SLACK_MS:
            self._hot.add(scope)  # more may go at once than this node asked for
            self._urge()
        if grant.waiting:
            self._wake.set()  # the pass sleeps until the scope's next grant
        return grant.added

    def reserve_take(self, scope: Scope) -> int | None:
        """Hold one send slot for a job this node is accepting now (``take.lua``).

        Returns the node's sends in flight for the scope (what ``take.lua``
        checks against the per-node cap), or None when the job should take
        the usual way: no free slot, the scope busy here or a grant call for it
        in flight (one at a time per scope keeps that count exact). Every
        reservation ends in :meth:`end_take`.
        """
        if self._stopping or self._free() <= 0 or scope in self._granting or self._blocked.get(scope, 0.0) > time.monotonic():
            return None
        self._granting.add(scope)
        self._taking.add(scope)
        self._reserved += 1
        return len(self._inflight.get(scope, ()))

    def end_take(self, scope: Scope, lease: str | None) -> None:
        """The take call is over: with a ``lease`` to send now, the job goes to ``on_grant``."""
        self._reserved -= 1
        self._granting.discard(scope)
        self._taking.discard(scope)
        if scope in self._asked_while_taking:  # jobs were admitted meanwhile: their grant was put off
            self._asked_while_taking.discard(scope)
            self._hot.add(scope)
            self._urge()
        if lease is not None:
            self._inflight.setdefault(scope, set()).add(lease)
            self._count += 1
            labelled(PACING_GRANTS, self._region).inc()
            self.on_grant(scope, lease)
        if self._short_of_room:
            self._short_of_room = False
            self._urge()

    def done(self, scope: Scope, lease: str) -> None:
        """A granted job's send is over (the worker released its lease)."""
        jobs = self._inflight.get(scope)
        if jobs is not None and lease in jobs:
            jobs.discard(lease)
            self._count -= 1
            if not jobs:
                del self._inflight[scope]
        if self._blocked.pop(scope, None) is not None or self._short_of_room:
            self._urge()  # the slot goes to a job that waited for one
        else:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._urge()

    # -- loops -------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._urgent.clear()
            try:
                delay = await self._pass()
            except asyncio.CancelledError:
                raise
            except _REDIS_DOWN:
                log.warning("redis unavailable; pacing paused", exc_info=True)
                delay = 0.5
            except Exception:
                log.exception("pacing pass failed")
                delay = 0.5
            if delay > 0 and not self._stopping:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                wait = until_tick_s(time.time() * 1000, self.tick_ms)
                if wait > 0 and not self._stopping and not self._urgent.is_set():
                    try:
                        async with asyncio.timeout(wait):
                            await self._urgent.wait()
                    except TimeoutError:
                        pass

    async def _pass(self) -> float:
        """One look at the ready set (after the scopes just admitted here); returns how long to sleep."""
        now_ms = time.time() * 1000
        next_ms: float | None = None
        again = False
        asked: set[Scope] = set()

        async def ask(scopes: list[Scope]) -> bool:
            """Ask ``scopes`` at once and note what their grants say; True when the node ran out of free slots."""
            nonlocal next_ms, again
            grants, short = await self._ask_all(scopes, time.monotonic())
            for grant in grants:
                if grant.leases and grant.waiting and grant.next_ms <= now_ms:
                    again = True  # more may go at once (a burst, a bigger cap)
                if grant.next_ms > 0 and grant.waiting:
                    next_ms = grant.next_ms if next_ms is None else min(next_ms, grant.next_ms)
            return short

        hot, self._hot = self._hot, set()
        empty = not hot  # the region's ready set has nothing at all (read below), and nothing was admitted here
        asked.update(hot)
        if await ask(list(hot)):
            return self.poll_s  # the ready set has them too; a finished send or grant wakes us
        for page in range(self.max_pages):
            # Scores are whole ms, rounded up: a scope due now may score up to 1 ms ahead.
            due, upcoming_ms = await self.limiter.due(now_ms=now_ms + DUE_SLACK_MS, limit=self.page, offset=page * self.page)
            if page == 0:
                empty = empty and not due and upcoming_ms is None
                if upcoming_ms is not None:
                    next_ms = upcoming_ms if next_ms is None else min(next_ms, upcoming_ms)
            if await ask([scope for scope, _score in due if scope not in asked]):  # (those asked a moment ago: not again)
                return self.poll_s  # a finished send or grant wakes us
            if len(due) < self.page:
                break  # pages on: due scopes this node skipped must not hide the rest
        if again:
            return 0.0
        if empty:
            return max(self.poll_s, self.idle_poll_s)
        if next_ms is None:
            return self.poll_s
        return min(max((next_ms - time.time() * 1000) / 1000, 0.001), self.poll_s)

    async def _ask_all(self, scopes: Sequence[Scope], mono: float) -> tuple[list[Grant], bool]:
        """Ask ``scopes`` for jobs at once: their grant calls share one round trip, and the jobs they grant start
        their sends together, so that each step after (the attempt's record, its place in the window, the send,
        its end) goes to Redis in one write for all of them. Skips a scope found busy a moment ago or being asked
        already (a grant in flight for it, from admission, leaves it in the next pass's first look if more may
        go). Returns the grants, and True when the node ran out of free send slots before the last scope.

        Each call's send slots are reserved here, before any of them runs: the node's cap holds, and a scope
        has one grant call at a time (its count of sends here stays exact).
        """
        if self._stopping:
            return [], True
        asking: list[Scope] = []
        for scope in scopes:
            if scope in self._taking:
                self._asked_while_taking.add(scope)  # asked again as soon as the take is over
            elif self._blocked.get(scope, 0.0) <= mono and scope not in self._granting:
                asking.append(scope)
        free = self._free()
        short = len(asking) > free
        if short:
            self._short_of_room = True
            asking = asking[: max(free, 0)]
        if not asking:
            return [], short
        # The free slots shared out (a grant call holds what it may fill until it is answered): a scope with more
        # to send than its share is asked again once one of its sends here is over (BUSY), or in the next pass.
        share, extra = divmod(free, len(asking))
        wants = [min(self.max_per_grant, share + (i < extra)) for i in range(len(asking))]
        calls = [self._grant(scope, want=self._reserve(scope, want)) for scope, want in zip(asking, wants)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        grants: list[Grant] = []
        failure: BaseException | None = None
        for scope, result in zip(asking, results):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            if result.status == BUSY:
                self._blocked[scope] = mono + self.blocked_s
            grants.append(result)
        if failure is not None:
            raise failure
        return grants, short

    def _free(self) -> int:
        return self.capacity - self._count - self._reserved

    def _reserve(self, scope: Scope, want: int | None = None) -> int:
        """Hold ``want`` send slots (by default all free ones, at most ``max_per_grant``) for a grant call for
        ``scope`` until it is answered; the scope is being asked from now on (one grant call at a time each).
        Returns how many."""
        if want is None:
            want = min(self._free(), self.max_per_grant)
        self._granting.add(scope)
        self._reserved += want
        return want

    async def _grant(self, scope: Scope, jobs: Sequence[tuple[str, str]] = (), *, want: int | None = None) -> Grant:
        """Ask ``scope`` for jobs (after queueing ``jobs``, if any); the grant says how many of those were new.

        Grant calls may be in flight at once (the pass, and admission on each
        stream), one per scope at a time, so the count of the scope's sends
        here is exact; each reserves the send slots it asks for until its
        leases are counted, so the node's cap holds. ``want``: the slots
        :meth:`_reserve` already holds for this call (else it reserves them now).
        """
        held = len(self._inflight.get(scope, ()))
        if want is None:
            want = self._reserve(scope)
        reserved = True

        def unreserve() -> None:
            nonlocal reserved
            if reserved:
                reserved = False
                self._reserved -= want
                self._granting.discard(scope)
                if self._short_of_room:
                    self._short_of_room = False
                    self._urge()

        def start(grant: Grant) -> None:  # before the ready set is written: the sends go at once
            unreserve()
            for lease in grant.leases:
                self._inflight.setdefault(scope, set()).add(lease)
                self._count += 1
                labelled(PACING_GRANTS, self._region).inc()
                self.on_grant(scope, lease)

        try:
            if jobs:
                grant = await self.limiter.admit_and_grant(scope, jobs, inflight=held, want=want, lease_ms=self.lease_ms, on_granted=start)
            else:
                grant = await self.limiter.grant(scope, inflight=held, want=want, lease_ms=self.lease_ms, on_granted=start)
        finally:
            unreserve()
        if grant.recovered:
            PACING_LEASES_RECOVERED.labels(self._region).inc(grant.recovered)
            log.info("recovered %d expired leases of %s", grant.recovered, scope, extra={"region": self._region})
        return grant

    async def keep_leases(self) -> None:
        """Renew the leases of every job this node is sending, every lease/3."""
        interval = max(self.lease_ms / 3000.0, 0.05)
        while not self._stopping:
            await asyncio.sleep(interval)
            for scope, jobs in self.held().items():
                try:
                    await self.limiter.renew(scope, sorted(jobs), self.lease_ms)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("lease renewal failed for %s", scope, exc_info=True)

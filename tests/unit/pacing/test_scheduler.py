"""The scheduler's loop against a real Redis."""

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.pacing.limiter import Limiter, PacingPolicy
from ezthrottle_server.pacing.scheduler import Scheduler
from ezthrottle_server.pacing.scope import Scope

pytestmark = pytest.mark.asyncio

SCOPE = Scope("api.example:443")


async def wait_for(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_scope_admitted_here_is_asked_without_the_ready_set(redis):
    limiter = Limiter(redis, PacingPolicy(), "iad")
    granted: list[str] = []
    scheduler = Scheduler(limiter, lambda scope, lease: granted.append(lease), capacity=8, lease_ms=30_000, poll_s=30.0)
    loop = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.05)  # the first pass found nothing; the next poll is 30 s away
        nexts: list[int] = []
        await limiter.admit(SCOPE, [("j1", "acme")], on_queued=lambda scope, next_ms: nexts.append(next_ms))
        await redis.zrem(keys.pacing_ready("iad"), SCOPE.member)  # the ready set cannot be what finds it
        scheduler.admitted(SCOPE, nexts[0])
        await wait_for(lambda: granted)
        assert [lease.split("@")[0] for lease in granted] == ["j1"]
    finally:
        scheduler.stop()
        await asyncio.wait_for(loop, 5.0)


async def test_admission_takes_what_may_go_now_in_the_same_step(redis):
    limiter = Limiter(redis, PacingPolicy(default_rps=1000.0, max_rps=1000.0, default_max_concurrent=8), "iad")
    granted: list[str] = []
    scheduler = Scheduler(limiter, lambda scope, lease: granted.append(lease), capacity=8, lease_ms=30_000, poll_s=30.0)
    assert await scheduler.admit(SCOPE, [("j1", "acme")]) == 1
    assert [lease.split("@")[0] for lease in granted] == ["j1"]  # no pass ran: the admission granted it
    assert scheduler.inflight == 1


async def test_concurrent_admissions_keep_the_per_node_cap(redis):
    # The rate allows a burst (5 ms of tolerance at 1,000/s); the per-node cap is 2.
    limiter = Limiter(redis, PacingPolicy(default_rps=1000.0, max_rps=1000.0, default_max_concurrent=2), "iad")
    granted: list[str] = []
    scheduler = Scheduler(limiter, lambda scope, lease: granted.append(lease), capacity=100, lease_ms=30_000, poll_s=30.0, max_per_grant=4)
    batches = [[(f"{b}{i}", "acme") for i in range(4)] for b in "abc"]
    added = await asyncio.gather(*(scheduler.admit(SCOPE, jobs) for jobs in batches))
    assert added == [4, 4, 4]
    assert len(granted) == 2 and scheduler.inflight == 2
    assert await redis.zcard(keys.pacing_running(SCOPE.domain, SCOPE.who, "iad")) == 2


async def test_jobs_admitted_while_a_take_is_in_flight_are_granted_as_soon_as_it_is_over(redis):
    limiter = Limiter(redis, PacingPolicy(default_rps=1000.0, max_rps=1000.0, default_max_concurrent=8), "iad")
    granted: list[str] = []
    scheduler = Scheduler(limiter, lambda scope, lease: granted.append(lease), capacity=8, lease_ms=30_000, poll_s=30.0)
    loop = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.05)  # the first pass found nothing; the next poll is 30 s away
        assert scheduler.reserve_take(SCOPE) == 0  # a job being accepted holds the scope's grant turn
        assert await scheduler.admit(SCOPE, [("j1", "acme")]) == 1  # queued only: the take is in flight
        await asyncio.sleep(0.1)
        assert granted == []
        scheduler.end_take(SCOPE, None)  # the take got nothing
        await wait_for(lambda: granted, timeout_s=1.0)  # not at the next poll, 30 s away
        assert [lease.split("@")[0] for lease in granted] == ["j1"]
        assert scheduler.reserve_take(SCOPE) == 1  # and the turn is free again
        scheduler.end_take(SCOPE, None)
    finally:
        scheduler.stop()
        await asyncio.wait_for(loop, 5.0)


async def zrangebyscore_calls(redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_zrangebyscore", {}).get("calls", 0))


async def test_an_idle_pacer_looks_less_often_and_still_finds_what_another_node_queued(redis):
    """Nothing waits or runs in the region: passes every idle_poll_s, not every poll_s. Work another node queued
    (and could not send) is found by the next idle pass without any wake-up here, and the node polls as before."""
    limiter = Limiter(redis, PacingPolicy(default_rps=1000.0, max_rps=1000.0, default_max_concurrent=8), "iad")
    granted: list[str] = []
    scheduler = Scheduler(limiter, lambda scope, lease: granted.append(lease), capacity=8, lease_ms=30_000, poll_s=0.05, idle_poll_s=0.4)
    loop = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.1)
        before, started = await zrangebyscore_calls(redis), time.monotonic()
        await asyncio.sleep(2.0)
        passes = (await zrangebyscore_calls(redis) - before) / 2  # each pass reads the ready set twice (due, upcoming)
        elapsed = time.monotonic() - started
        assert passes <= elapsed / 0.4 + 1, (passes, elapsed)  # polling every poll_s would have made about 40

        elsewhere = Limiter(redis, PacingPolicy(default_rps=1000.0, max_rps=1000.0, default_max_concurrent=8), "iad")
        await elsewhere.admit(SCOPE, [("j1", "acme")])  # queued by another node: nothing here is told
        await wait_for(lambda: granted, timeout_s=0.4 + 1.0)
        assert [lease.split("@")[0] for lease in granted] == ["j1"]

        before, started = await zrangebyscore_calls(redis), time.monotonic()
        await asyncio.sleep(0.5)  # j1's lease keeps its scope in the ready set: the region is not idle
        passes = (await zrangebyscore_calls(redis) - before) / 2
        assert passes >= (time.monotonic() - started) / 0.4 + 1, passes
    finally:
        scheduler.stop()
        await asyncio.wait_for(loop, 5.0)


def grant_batches(limiter: Limiter) -> list[int]:
    """Record, for each batch the limiter's batcher sends from now on, how many grant.lua calls it carries."""
    batcher, sha = limiter._batch, limiter._scripts["grant"].sha
    sizes: list[int] = []
    real_flush = batcher._flush

    def flush() -> None:
        grants = sum(1 for command, _script, _fut in batcher._pending if command[:2] == ("EVALSHA", sha))
        if grants:
            sizes.append(grants)
        real_flush()

    batcher._flush = flush  # type: ignore[method-assign]
    return sizes


FAST = {"default_rps": 1000.0, "max_rps": 1000.0}  # the rate lets a burst go (5 ms of tolerance at 1,000/s)


async def queue_elsewhere(redis, scopes: list[Scope], jobs_each: int) -> None:
    """Jobs queued by another node of the region: the scheduler under test finds them in the ready set."""
    elsewhere = Limiter(redis, PacingPolicy(**FAST, default_max_concurrent=8), "iad")
    for n, scope in enumerate(scopes):
        await elsewhere.admit(scope, [(f"j{n}-{i}", "acme") for i in range(jobs_each)])


@contextlib.asynccontextmanager
async def running(redis, on_grant, *, max_concurrent: int = 8, **options) -> AsyncIterator[tuple[Limiter, Scheduler]]:
    """A node's limiter and scheduler, its pass loop running (polling every 30 s: only wake-ups make it look)."""
    limiter = Limiter(redis, PacingPolicy(**FAST, default_max_concurrent=max_concurrent), "iad")
    scheduler = Scheduler(limiter, on_grant, lease_ms=30_000, poll_s=30.0, **options)
    loop = asyncio.create_task(scheduler.run())
    try:
        yield limiter, scheduler
    finally:
        scheduler.stop()
        await asyncio.wait_for(loop, 5.0)


async def test_a_pass_asks_every_due_scope_in_one_round_trip(redis):
    scopes = [Scope(f"api{n}.example:443") for n in range(6)]
    await queue_elsewhere(redis, scopes, 1)
    granted: list[str] = []
    batches: list[int] = []
    async with running(redis, lambda scope, lease: granted.append(lease), capacity=8) as (limiter, _scheduler):
        batches = grant_batches(limiter)  # before the first pass: the loop has not run yet
        await wait_for(lambda: len(granted) == 6)
    assert sorted(lease.split("@")[0] for lease in granted) == [f"j{n}-0" for n in range(6)]
    assert batches[0] == 6, batches  # asked one after the other, each would have been a batch (and a round trip) of its own


async def test_scopes_asked_at_once_share_the_nodes_free_slots(redis):
    # Six scopes with two jobs each, all of which their limits would let go: the node has room for three sends.
    scopes = [Scope(f"api{n}.example:443") for n in range(6)]
    await queue_elsewhere(redis, scopes, 2)
    granted: list[str] = []
    async with running(redis, lambda scope, lease: granted.append(lease), capacity=3) as (limiter, scheduler):
        batches = grant_batches(limiter)
        await wait_for(lambda: len(granted) >= 3)
        await asyncio.sleep(0.2)  # passes woken meanwhile find no room
        assert len(granted) == 3 and scheduler.inflight == 3
        running_leases = [await redis.zcard(keys.pacing_running(s.domain, s.who, "iad")) for s in scopes]
        assert sum(running_leases) == 3, running_leases
        assert batches == [3], batches  # three scopes asked at once, a slot each: none asked for nothing
        for lease in list(granted):
            scope = scopes[int(lease[1 : lease.index("-")])]
            await limiter.release(scope, lease)
            scheduler.done(scope, lease)
        await wait_for(lambda: len(granted) >= 6)
        assert scheduler.inflight == 3


async def test_passes_start_on_the_grid_of_the_clock(redis):
    """A pass woken at any moment (here: told that work may have arrived, as another node's queueing or a paced send
    finishing tells it) starts at the next point of the grid, so that scopes falling due at their own moments are
    asked, and their jobs sent, together."""
    tick_ms = 50.0
    granted_at: list[float] = []
    rng = random.Random(7)
    async with running(redis, lambda scope, lease: granted_at.append(time.time() * 1000), capacity=64, tick_ms=tick_ms) as (_, scheduler):
        await asyncio.sleep(0.05)
        for n in range(10):
            await asyncio.sleep(rng.uniform(0, tick_ms / 1000))
            await queue_elsewhere(redis, [Scope(f"api{n}.example:443")], 1)
            scheduler.wake()
            await wait_for(lambda n=n: len(granted_at) == n + 1)
    phases = [at % tick_ms for at in granted_at]
    # the grant's round trips come after the grid point; woken at random, 3 in 10 would fall this early
    assert sum(phase < 15.0 for phase in phases) >= 8, phases


async def test_a_send_slot_freed_for_a_job_that_waited_for_it_is_filled_at_once_off_the_grid(redis):
    """The grid is for paced scopes; a scope at this node's cap (BUSY) gets the slot one of its sends frees at once."""
    tick_ms = 1000.0
    scope = Scope("api.example:443")
    await queue_elsewhere(redis, [scope], 2)
    granted: list[str] = []
    on_grant = granted.append
    async with running(redis, lambda scope, lease: on_grant(lease), max_concurrent=1, capacity=8, tick_ms=tick_ms) as (limiter, scheduler):
        await wait_for(lambda: granted)
        assert [lease.split("@")[0] for lease in granted] == ["j0-0"]  # the node's one slot for the scope: busy
        while not 10.0 <= time.time() * 1000 % tick_ms <= 100.0:  # just past a point of the grid: the next is ~0.9 s away
            await asyncio.sleep(0.005)
        await limiter.release(scope, granted[0])
        freed = time.monotonic()
        scheduler.done(scope, granted[0])
        await wait_for(lambda: len(granted) == 2, timeout_s=2.0)
        assert granted[1].split("@")[0] == "j0-1"
        assert time.monotonic() - freed < 0.5, time.monotonic() - freed

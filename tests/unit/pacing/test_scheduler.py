"""The scheduler's loop against a real Redis."""

import asyncio
import time

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

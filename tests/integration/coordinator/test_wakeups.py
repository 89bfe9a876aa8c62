"""The coordinator rests between passes and is woken for work put ahead of its rest (coordinator/wake.py).

Its delayed releaser and workflow spawner sleep until their first entry is due
(at most ``IDLE_S``); the scripts that put work ahead of that publish a wake-up.
These tests check both halves: what publishes, and a resting loop that only a
wake-up or a due entry can move (``IDLE_S`` raised to a minute)."""

import asyncio
import inspect
import time
from functools import partial
from typing import Any

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.pubsub import EventHub
from ezthrottle_server.common.redisconn import Scripts, connect_pubsub
from ezthrottle_server.coordinator import loop as coordinator_loop
from ezthrottle_server.coordinator.delayed import DelayedReleaser
from ezthrottle_server.coordinator.wake import Wakes
from ezthrottle_server.pacing.flow import FlowControl
from support.jobs import auth, submit, wait_final
from support.redis_server import free_port
from support.services import make_settings

pytestmark = pytest.mark.asyncio

QUIET_S = 0.5  # how long a wake-up that should not come is waited for
WAIT_S = 10.0  # every other wait is bounded


def now_ms() -> int:
    return int(time.time() * 1000)


class Listener:
    """The coordinator's wake-up channel, heard from the test."""

    def __init__(self, redis_url: str) -> None:
        self.client = connect_pubsub(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)

    async def __aenter__(self) -> "Listener":
        await self.pubsub.subscribe(keys.coordinator_wake())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()

    async def heard(self, wait_s: float) -> list[str]:
        """Every wake-up within ``wait_s`` of the first (or of now, if none comes)."""
        got: list[str] = []
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            message = await self.pubsub.get_message(timeout=left)
            if message and message["type"] == "message":
                got.append(message["data"])
                deadline = min(deadline, time.monotonic() + 0.2)
        return got


async def test_work_put_ahead_of_the_coordinators_rest_publishes_a_wake_up(http, redis, redis_url, edge, api_key, target):
    echo = f"{target.url}/echo"
    firsts: dict[int | None, int] = {}  # partition -> its delayed set's first due

    async def delayed(n: int, due: int, **more: Any) -> list[str]:
        """Submit job n due at ``due``: 'delayed' is expected iff it goes ahead of its partition's first."""
        job = await submit(http, edge.url, api_key, {"url": f"{echo}?n={n}", "retry_at": due, **more})
        partition = keys.job_partition(job["job_id"])
        ahead = due < firsts.get(partition, due + 1)
        firsts[partition] = min(due, firsts.get(partition, due))
        return ["delayed"] if ahead else []

    async with Listener(redis_url) as listener:
        now = now_ms()
        assert await delayed(1, now + 60_000) == ["delayed"]  # the first of an empty set
        assert await listener.heard(WAIT_S) == ["delayed"]
        expected = await delayed(2, now + 120_000)  # behind the first, on one partition: the coordinator wakes for that one anyway
        assert await listener.heard(QUIET_S if not expected else WAIT_S) == expected
        assert await delayed(3, now + 30_000) == ["delayed"]  # ahead of every other
        assert await listener.heard(WAIT_S) == ["delayed"]
        expected = await delayed(4, now + 45_000, start_before_ms=now + 60_000)
        assert sorted(await listener.heard(WAIT_S)) == sorted(["timers", *expected])  # its deadline timer, the first
        chained = await submit(http, edge.url, api_key, {"url": f"{echo}?n=5", "on_success": {"url": f"{echo}?n=6"}})
        assert (await wait_final(http, edge.url, api_key, chained["job_id"]))["status"] == "success"
        assert await listener.heard(WAIT_S) == ["spawn"]  # its chain goes on through the coordinator


async def test_a_flow_control_resume_publishes_a_wake_up(redis, redis_url):
    job_id = f"job_{now_ms()}_{'a' * 16}p0"
    member = f"iad|{job_id}"
    await redis.zadd(keys.delayed(0), {member: now_ms() + 3_600_000})  # held back by the key for an hour
    flow = FlowControl(redis)
    await flow.deferred("acme", "k", member, now_ms() + 3_600_000)
    async with Listener(redis_url) as listener:
        assert await flow.resume("acme", "k") == 1
        assert await listener.heard(WAIT_S) == ["delayed"]
    assert float(await redis.zscore(keys.delayed(0), member)) <= now_ms()  # due now


class Leading:
    """A leadership that is always held (the loop under test leads)."""

    is_leader = True


class CountedReleaser(DelayedReleaser):
    passes = 0

    async def poll(self) -> bool:
        self.passes += 1
        return await super().poll()


async def run_releaser(redis, redis_url: str, hub_url: str) -> tuple[CountedReleaser, Wakes, list[asyncio.Task[None]], EventHub]:
    hub = EventHub(connect_pubsub(hub_url))
    hub.start()
    wakes = Wakes(hub)
    releaser = CountedReleaser(make_settings("coordinator", redis_url, None), redis, Scripts(redis), Leading(), wakes=wakes)
    tasks = [asyncio.create_task(wakes.run()), asyncio.create_task(releaser.run())]
    return releaser, wakes, tasks, hub


async def stop(tasks: list[asyncio.Task[None]], hub: EventHub) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await hub.close()


async def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await _result(check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_resting_releaser_makes_few_passes_and_releases_what_it_is_woken_for(redis, redis_url, monkeypatch):
    monkeypatch.setattr(coordinator_loop, "IDLE_S", 60.0)  # only a wake-up or a due entry moves it
    releaser, wakes, tasks, hub = await run_releaser(redis, redis_url, redis_url)
    try:
        await wait_until(lambda: wakes.listening, "never subscribed")
        await asyncio.sleep(0.3)
        resting = releaser.passes
        await asyncio.sleep(1.0)
        assert releaser.passes - resting <= 1  # polling, it made 50 passes a second
        member = f"iad|job_{now_ms()}_{'b' * 16}p0"
        due = now_ms() + 300
        await redis.zadd(keys.delayed(0), {member: due})
        publisher = connect_pubsub(redis_url)
        try:
            await publisher.publish(keys.coordinator_wake(), "delayed")  # as _wake.lua does for a new first entry
        finally:
            await publisher.aclose()
        await wait_until(partial(_gone, redis, member), "not released")
        assert now_ms() >= due  # released once due, not when woken
        assert await redis.xlen(keys.region_stream(0, "iad")) == 1
    finally:
        await stop(tasks, hub)


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _gone(redis, member: str) -> bool:
    return await redis.zscore(keys.delayed(0), member) is None


async def test_without_its_wake_ups_the_releaser_polls_as_before(redis, redis_url, monkeypatch):
    monkeypatch.setattr(coordinator_loop, "IDLE_S", 60.0)
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the subscription never comes up
    releaser, wakes, tasks, hub = await run_releaser(redis, redis_url, dead)
    try:
        member = f"iad|job_{now_ms()}_{'c' * 16}p0"
        await redis.zadd(keys.delayed(0), {member: now_ms() + 200})  # no wake-up published
        await wait_until(partial(_gone, redis, member), "a job waits on a wake-up that cannot come")
        assert not wakes.listening and releaser.passes > 5
    finally:
        await stop(tasks, hub)


async def test_a_resting_coordinator_fires_a_schedule_made_while_it_rested(
    http, redis_url, edge, start_coordinator, api_key, target, monkeypatch
):
    monkeypatch.setattr(coordinator_loop, "IDLE_S", 60.0)  # only a wake-up or a tick due moves its loops
    await start_coordinator(node_id="coordinator-resting")
    await asyncio.sleep(0.5)  # resting: nothing is due
    async with Listener(redis_url) as listener:
        body = {"every_s": 1, "overlap": "allow", "job": {"url": f"{target.url}/echo"}}
        async with http.post(f"{edge.url}/api/v1/schedules", json=body, headers=auth(api_key)) as resp:
            assert resp.status == 201, await resp.text()
        assert await listener.heard(WAIT_S) == ["schedules"]  # the first of the due set
    await target.wait_for(3, "/echo", timeout_s=WAIT_S)  # each tick found by the firer's own next look, not the idle one


async def test_a_flood_of_wake_ups_makes_no_more_passes_than_polling_did(redis, redis_url, monkeypatch):
    """A customer can publish wake-ups at will (each delayed job submitted ahead of the last one does):
    the releaser still makes at most one pass every poll_s, as when it polled."""
    monkeypatch.setattr(coordinator_loop, "IDLE_S", 60.0)
    releaser, wakes, tasks, hub = await run_releaser(redis, redis_url, redis_url)
    publisher = connect_pubsub(redis_url)
    try:
        await wait_until(lambda: wakes.listening, "never subscribed")
        await asyncio.sleep(0.3)
        before, started = releaser.passes, time.monotonic()
        for _ in range(1000):  # bounded: a thousand wake-ups, as fast as one connection sends them
            await publisher.publish(keys.coordinator_wake(), "delayed")
        await asyncio.sleep(0.1)  # the last ones heard
        elapsed = time.monotonic() - started
        passes = releaser.passes - before
        assert passes >= 1  # woken
        assert passes <= elapsed / releaser.poll_s + 2, (passes, elapsed)
    finally:
        await publisher.aclose()
        await stop(tasks, hub)

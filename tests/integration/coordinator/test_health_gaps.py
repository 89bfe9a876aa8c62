"""Silence the regions did not cause (coordinator/health.py).

Every node beats through one Redis. A Redis that stops answering (SIGSTOP, a
real server of the test's own) for longer than a node's silence allowance
must take no region down: its edges could not beat, the regions were fine.
And every node of every region silent at once is held for a grace before it
is judged, then judged as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import orjson
import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.common.redisconn import RedisClient, connect
from ezthrottle_server.coordinator.health import HealthRules, RegionMonitor
from support.redis_server import free_port, redis_binary
from support.services import make_settings

pytestmark = pytest.mark.asyncio

SILENT_MS = 800
BEATING = ("iad", "lax")  # ord never has a node


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[tuple[str, int]]:
    """A Redis of the test's own, to stop: (url, pid)."""
    with redis_binary(free_port()) as (url, proc, _):
        yield url, proc.pid


class World:
    """One edge per beating region (its heartbeat, as edge/app.py writes it, every 0.1 s while ``beating``), a
    region monitor that leads, and a watcher of every state and reason the monitor publishes."""

    def __init__(self, url: str, rules: HealthRules) -> None:
        self.redis: RedisClient = connect(url)
        self.monitor = RegionMonitor(make_settings("coordinator", url), connect(url), SimpleNamespace(is_leader=True), rules, 0.05)  # type: ignore[arg-type]
        self.beating = asyncio.Event()
        self.beating.set()
        self.states: dict[str, list[tuple[float, str]]] = {}
        self.reasons: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def _beat(self) -> None:
        edges = connect(self.monitor.settings.redis_url)
        try:
            while True:
                await self.beating.wait()
                now = int(time.time() * 1000)
                beats = {
                    f"{r}-1": orjson.dumps({"node": f"{r}-1", "region": r, "ts_ms": now, "outcomes": {}, "probes": {}}) for r in BEATING
                }
                await edges.hset(keys.heartbeats(), mapping=beats)  # type: ignore[misc, arg-type]
                await asyncio.sleep(0.1)
        finally:
            await edges.aclose()

    async def _watch(self) -> None:
        while True:
            for rid, raw in (await self.redis.hgetall(keys.region_states())).items():  # type: ignore[misc]
                view = orjson.loads(raw)
                self.states.setdefault(rid, []).append((time.monotonic(), view["state"]))
                self.reasons.add(view["reason"])
            await asyncio.sleep(0.05)

    def forget(self) -> None:
        """Start the record afresh: what the monitor published before (its first passes may run before the first
        beat is written, and hold every region as all silent) is not what a test is about."""
        self.states.clear()
        self.reasons.clear()

    def seen(self, region: str) -> set[str]:
        return {s for _, s in self.states.get(region, [])}

    async def until(self, region: str, state: str, timeout_s: float = 10.0) -> float:
        async with asyncio.timeout(timeout_s):
            while not self.states.get(region) or self.states[region][-1][1] != state:
                await asyncio.sleep(0.02)
        return time.monotonic()

    async def __aenter__(self) -> World:
        self._tasks = [asyncio.create_task(t) for t in (self._beat(), self.monitor.run(), self._watch())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.redis.aclose()
        await self.monitor.redis.aclose()


async def test_redis_stopped_longer_than_the_silence_allowance_takes_no_region_down(own_redis):
    """iad's second node died 5 s before: silent before, during and after the stop (the gap excuses only the nodes
    alive when the monitor last read), so iad stays degraded and lax up throughout."""
    url, pid = own_redis
    dead = {"node": "iad-2", "region": "iad", "ts_ms": int(time.time() * 1000) - 5000, "outcomes": {}, "probes": {}}
    async with connect(url) as redis:
        await redis.hset(keys.heartbeats(), "iad-2", orjson.dumps(dead))  # type: ignore[misc, arg-type]
    async with World(url, HealthRules(silent_after_ms=SILENT_MS, recover_after_ms=5000)) as world:
        await world.until("iad", "degraded")
        await world.until("lax", "up")
        world.forget()
        world.beating.clear()  # the edges' writes fail from here: Redis is about to stop
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(3 * SILENT_MS / 1000)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.4)  # the edges find Redis again a little after the monitor does
        world.beating.set()
        await asyncio.sleep(1.5)
        assert world.seen("iad") == {"degraded"} and world.seen("lax") == {"up"}, world.states
        assert world.seen("ord") == {"unknown"}


async def test_every_node_silent_at_once_is_held_for_the_grace_then_judged(own_redis):
    url, _ = own_redis
    grace_ms = 1500
    async with World(url, HealthRules(silent_after_ms=SILENT_MS, recover_after_ms=5000, all_silent_grace_ms=grace_ms)) as world:
        for region in BEATING:
            await world.until(region, "up")
        world.forget()
        world.beating.clear()  # every edge stops beating: Redis answers, but not to them (or they are all gone)
        stopped = time.monotonic()
        down_at = await world.until("iad", "down", timeout_s=15)
        assert down_at - stopped >= (SILENT_MS + grace_ms) / 1000 - 0.2  # held, not judged, for the grace
        assert any("every node of every region silent" in r for r in world.reasons), world.reasons
        await world.until("lax", "down")
        world.beating.set()  # back: believed only after sustained health (they were seen failing)
        await asyncio.sleep(1.0)
        assert world.states["iad"][-1][1] == "down"

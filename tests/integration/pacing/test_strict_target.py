"""A strict target never sees more than its limit in any sliding second, from three regions' edges.

The target counts as many real APIs do: a request that finds N others in the
last second (a sliding window, clocked at its arrival) gets 429. The domain's
limit is N; jobs are spread over three edges whose regions add different
simulated network latencies (as ``make up-local`` does), so grants spaced
exactly 1/N apart in Redis time would arrive closer than that. ``space.lua``
spaces the sends at the moment they leave; the target must answer no 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest
from aiohttp import web

from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import submit_many
from support.jobs import wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


class StrictTarget:
    """Loopback HTTP server: 429 to a request that finds ``limit`` others in the last second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.recent: deque[float] = deque()
        self.arrivals: list[float] = []
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_get("/strict", self._handle)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StrictTarget:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        self.arrivals.append(now)
        if len(self.recent) >= self.limit:
            self.refused += 1
            return web.Response(status=429, text="too many requests in the last second")
        self.recent.append(now)
        return web.Response(text="ok")


@pytest.mark.parametrize(("limit", "seconds"), [(2, 8), (20, 5), (100, 3)])
async def test_a_strict_target_sees_no_429(http, redis, start_edge, api_key, limit, seconds):
    target = await StrictTarget(limit).start()
    try:
        domain = f"127.0.0.1:{target.port}"
        await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{rps: {limit}, max_concurrent: 16}}\n"))
        edges = [await start_edge(region, simulate_latency=True) for region in ("iad", "lax", "ord")]
        jobs = limit * seconds
        ids = await submit_many(http, [e.url for e in edges], api_key, [{"url": f"{target.url}/strict?n={i}"} for i in range(jobs)])
        for job_id in ids:
            assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=seconds * 3 + 10))["status"] == "success"
        arrivals = sorted(target.arrivals)
        assert target.refused == 0, f"{target.refused} requests of {len(arrivals)} got 429"
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        print(f"N={limit}: {len(arrivals)} requests, 0 refused, {rate:.2f}/s = {rate / limit:.3f} N")
        # The rate is bench.pacing's to measure, with real processes (no timed assertion here: three
        # edges, the target and this test share one event loop, which bounds it at N = 100).
    finally:
        await target.stop()


async def test_without_spacing_the_same_run_provokes_429s(http, redis, start_edge, api_key):
    """The test can fail: with the window margin negative (sends let through early), the strict target refuses some."""
    limit = 20
    target = await StrictTarget(limit).start()
    try:
        domain = f"127.0.0.1:{target.port}"
        await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{rps: {limit}, max_concurrent: 16}}\n"))
        edges = [
            await start_edge(region, simulate_latency=True, pacing_window_margin_ms=-150.0, pacing_rate_margin=0.0)
            for region in ("iad", "lax", "ord")
        ]
        await submit_many(http, [e.url for e in edges], api_key, [{"url": f"{target.url}/strict?n={i}"} for i in range(limit * 4)])
        async with asyncio.timeout(30):  # every job tried once (a refused one waits for a retry that needs a coordinator)
            while len(target.arrivals) < limit * 4 and not target.refused:
                await asyncio.sleep(0.05)
        assert target.refused > 0
    finally:
        await target.stop()

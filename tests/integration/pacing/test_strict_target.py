"""A strict target never sees more than its limit in any sliding second, from three regions' edges.

The target counts as many real APIs do: a request that finds N others in the
last second (a sliding window, clocked at its arrival) gets 429. The domain's
limit is N; jobs are spread over three edges whose regions add different
simulated network latencies (as ``make up-local`` does), so grants spaced
exactly 1/N apart in Redis time would arrive closer than that. ``space.lua``
spaces the sends at the moment they leave; the target must answer no 429.
The target runs in a process of its own (``strict_target.py``), as a real one
does: with it in the test's loop, a loop turn spent on the edges delayed its
clock on some arrivals and not others (21 of N = 20 within one second, 1 run
in 5 on a loaded machine; apart, none in 9, N + 1 never closer than 1,015 ms).
"""

from __future__ import annotations

import asyncio

import pytest

from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.outbound.helpers import use_resolver
from integration.pacing.pacing_helpers import submit_many
from integration.pacing.strict_target import StrictTarget
from support.jobs import wait_final
from unit.outbound.netguard import StaticResolver

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.mark.parametrize(("limit", "seconds"), [(2, 8), (20, 5), (100, 3)])
async def test_a_strict_target_sees_no_429(http, redis, start_edge, api_key, limit, seconds):
    target = await StrictTarget(limit).start()
    try:
        domain = f"127.0.0.1:{target.port}"
        await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{rps: {limit}, max_concurrent: 16}}\n"))
        edges = [await start_edge(region, simulate_latency=True) for region in ("iad", "lax", "ord")]
        jobs = limit * seconds
        ids = await submit_many(http, [e.url for e in edges], api_key, [{"url": f"{target.url}/strict?n={i}"} for i in range(jobs)])
        async with asyncio.timeout(seconds * 3 + 10):  # every job sent once, or a 429 (whose retry needs a coordinator)
            while True:
                arrivals, refused = await target.stats()
                if refused or len(arrivals) >= jobs:
                    break
                await asyncio.sleep(0.1)
        spans = [later - first for first, later in zip(arrivals, arrivals[limit:], strict=False)]
        assert refused == 0, f"{refused} requests of {len(arrivals)} got 429; {limit + 1} arrived within {min(spans) * 1000:.1f} ms"
        for job_id in ids:
            assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=10))["status"] == "success"
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        closest = min(spans) * 1000
        print(f"N={limit}: {len(arrivals)} requests, 0 refused, {rate:.2f}/s = {rate / limit:.3f} N; N+1 within {closest:.1f} ms at least")
        # The rate is bench.pacing's to measure, with real processes (no timed assertion here: three
        # edges and this test share one event loop, which bounds it at N = 100).
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
            while True:
                arrivals, refused = await target.stats()
                if refused or len(arrivals) >= limit * 4:
                    break
                await asyncio.sleep(0.05)
        assert refused > 0
    finally:
        await target.stop()


class SlowFirstLookup(StaticResolver):
    """Answers from its table, the first lookup of each name ``delay_s`` late (a cold DNS cache)."""

    def __init__(self, table: dict[str, list[str]], delay_s: float) -> None:
        super().__init__(table)
        self.delay_s = delay_s

    async def resolve(self, host, port=0, family=0):  # type: ignore[no-untyped-def]
        if host.lower() not in self.lookups:
            await asyncio.sleep(self.delay_s)
        return await super().resolve(host, port, family)


async def test_a_send_that_leaves_late_after_its_spacing_counts_from_when_it_left(http, redis, start_edge, api_key):
    """A send's first connection (a name to look up, TCP, TLS) is made after ``space.lua`` let it go: recorded
    when allowed, it reaches the target that much later. Three jobs at N = 2, the first 300 ms late on its
    lookup: counted from when it was allowed, the third would arrive within a second of it (429); it is
    recorded again as it leaves, and the third waits for that."""
    limit = 2
    target = await StrictTarget(limit).start()
    try:
        domain = f"strict.test:{target.port}"
        await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{rps: {limit}, max_concurrent: 4}}\n"))
        edge = await start_edge("iad", simulate_latency=False)
        await use_resolver(edge, SlowFirstLookup({"strict.test": ["127.0.0.1"]}, delay_s=0.3))
        ids = await submit_many(http, [edge.url], api_key, [{"url": f"http://{domain}/strict?n={i}"} for i in range(3)])
        async with asyncio.timeout(20):
            while True:
                arrivals, refused = await target.stats()
                if refused or len(arrivals) >= 3:
                    break
                await asyncio.sleep(0.05)
        assert refused == 0, f"{refused} of {len(arrivals)} got 429: 3 arrived within {(arrivals[2] - arrivals[0]) * 1000:.0f} ms"
        assert arrivals[2] - arrivals[0] >= 1.0
        for job_id in ids:
            assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=10))["status"] == "success"
    finally:
        await target.stop()

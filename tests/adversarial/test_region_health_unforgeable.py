"""Region health that customers cannot forge (issue 14).

A region is judged by node heartbeats and by synthetic probes its edges send
to operator health targets (by default the other regions' edges' /healthz).
A customer's targets count against a region only in comparison with other
regions, and never take it down on their own.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.jobs import submit, wait_final
from support.redis_server import free_port

pytestmark = pytest.mark.asyncio

FAST = {"retry_backoff_base_s": 0.01, "retry_backoff_cap_s": 0.05}
FLOOD_S = 5.0  # the issue says 30 s; 5 s of flood already holds hundreds of dead attempts in the 10 s outcome window


@pytest_asyncio.fixture
async def health_coordinator(start_coordinator):
    return await start_coordinator(node_id="coordinator-health", region_recover_after_ms=1000)


async def region_views(http, edge):
    async with http.get(f"{edge.url}/api/v1/regions") as resp:
        assert resp.status == 200
        return {r["id"]: r for r in (await resp.json())["regions"]}


async def wait_state(http, edge, region, state, timeout_s):
    deadline = time.monotonic() + timeout_s
    view = {}
    while time.monotonic() < deadline:
        view = (await region_views(http, edge))[region]
        if view["state"] == state:
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"{region} not {state} within {timeout_s}s: {view}")


async def all_up(http, edge, timeout_s=6.0):
    for region in ("iad", "lax", "ord"):
        await wait_state(http, edge, region, "up", timeout_s)


async def test_one_customer_flooding_dead_domains_cannot_take_a_region_down(
    http, redis, start_edge, health_coordinator, api_key, other_api_key, target
):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    iad = await start_edge("iad", **FAST)
    await start_edge("lax", **FAST)
    await start_edge("ord", **FAST)
    await all_up(http, iad)

    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(24)]  # closed loopback ports
    states: list[tuple[float, str, str]] = []
    others: list[str] = []
    stop = asyncio.Event()

    async def flood() -> int:
        sent = 0
        while not stop.is_set():
            await asyncio.gather(*(submit(http, iad.url, api_key, {"url": f"{url}/x?n={sent}"}) for url in dead))
            sent += len(dead)
            await asyncio.sleep(0.2)
        return sent

    async def watch() -> None:
        while not stop.is_set():
            view = (await region_views(http, iad))["iad"]
            states.append((time.monotonic(), view["state"], view["reason"]))
            await asyncio.sleep(0.05)

    async def other_customer() -> None:
        n = 0
        while not stop.is_set():
            job = await submit(http, iad.url, other_api_key, {"url": f"{target.url}/echo?n={n}"})
            others.append(job["job_id"])
            n += 1
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(flood()), asyncio.create_task(watch()), asyncio.create_task(other_customer())]
    await asyncio.sleep(FLOOD_S)
    stop.set()
    flooded, _, _ = await asyncio.gather(*tasks)

    assert flooded >= 300
    not_up = [s for s in states if s[1] != "up"]
    assert len(states) > 50 and not not_up, not_up[:3]
    assert len(others) >= 10
    for job_id in others:
        view = await wait_final(http, iad.url, other_api_key, job_id, timeout_s=10)
        assert view["status"] == "success" and view["winner_region"] == "iad", view
    assert (await region_views(http, iad))["iad"]["state"] == "up"


@pytest.mark.parametrize("fault", ["broken", "hang"])  # connections refused; packets dropped (each probe times out)
async def test_a_region_whose_outbound_path_breaks_is_down_within_3s_and_comes_back_after_sustained_health(
    http, redis, start_edge, health_coordinator, api_key, target, fault
):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    iad = await start_edge("iad", **FAST)
    lax = await start_edge("lax", test_outbound_fault=True, **FAST)  # the switch exists only in tests
    await start_edge("ord", **FAST)
    await all_up(http, iad)
    async with http.get(f"{lax.url}/readyz") as resp:
        assert resp.status == 200

    from ezthrottle_server.edge.context import CTX

    executor = lax.app[CTX].executor
    broken_at = time.monotonic()
    setattr(executor, fault, True)  # lax's probes and sends fail from now on; its heartbeats go on
    down = await wait_state(http, iad, "lax", "down", timeout_s=3.0)
    took = time.monotonic() - broken_at
    assert took <= 3.0 and "health targets unreachable" in down["reason"], (took, down)
    assert {r["state"] for rid, r in (await region_views(http, iad)).items() if rid != "lax"} == {"up"}
    deadline = time.monotonic() + 1.5  # lax's edge reads the published states every quarter second
    while True:  # its /readyz steers clients to another region's edge
        async with http.get(f"{lax.url}/readyz") as resp:
            if resp.status == 503:
                assert (await resp.json())["region_usable"] is False
                break
        assert time.monotonic() < deadline, "lax's edge still ready while lax is down"
        await asyncio.sleep(0.05)

    # a job received by lax's edge runs elsewhere
    job = await submit(http, lax.url, api_key, {"url": f"{target.url}/echo"})
    view = await wait_final(http, lax.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "success" and view["winner_region"] != "lax"

    setattr(executor, fault, False)
    healed_at = time.monotonic()
    await asyncio.sleep(0.6)
    assert (await region_views(http, iad))["lax"]["state"] == "down"  # one good beat is not enough
    await wait_state(http, iad, "lax", "up", timeout_s=5.0)
    assert time.monotonic() - healed_at >= 0.9  # region_recover_after_ms=1000

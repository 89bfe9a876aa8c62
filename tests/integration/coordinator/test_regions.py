"""Region health end to end: edges heartbeat, the coordinator judges, edges route."""

import asyncio
import time

import pytest
import pytest_asyncio

from support.jobs import auth, submit
from support.services import RunningApp, make_settings

pytestmark = pytest.mark.asyncio


async def regions(http, edge):
    async with http.get(f"{edge.url}/api/v1/regions") as resp:
        assert resp.status == 200
        return {r["id"]: r for r in (await resp.json())["regions"]}


async def wait_state(http, edge, region, state, timeout_s=6.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = (await regions(http, edge))[region]
        if view["state"] == state:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{region} not {state} within {timeout_s}s: {view}")


@pytest_asyncio.fixture
async def fast_coordinator(redis, redis_url):
    from ezthrottle_server.coordinator.app import create_app

    settings = make_settings("coordinator", redis_url, node_id="coordinator-t", region_recover_after_ms=1000)
    app = await RunningApp(create_app(settings), settings).start()
    yield app
    await app.stop()


async def test_regions_show_state_reason_and_edges(http, start_edge, fast_coordinator):
    iad = await start_edge("iad")
    await start_edge("lax")
    up = await wait_state(http, iad, "lax", "up")
    assert up["edges"] and up["nodes"] and "healthy" in up["reason"]
    view = await regions(http, iad)
    assert view["iad"]["state"] == "up" and view["iad"]["edges"] == [iad.url]
    assert view["ord"]["state"] == "unknown"


async def test_a_stopped_region_goes_down_and_routing_follows_the_policy(http, start_edge, fast_coordinator, api_key, target):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    await wait_state(http, iad, "lax", "up")
    stopped_at = time.monotonic()
    await lax.stop()
    down = await wait_state(http, iad, "lax", "down", timeout_s=3.5)
    assert time.monotonic() - stopped_at <= 3.5
    assert down["reason"]

    # fallback (the default) goes to a healthy region instead
    job = await submit(http, iad.url, api_key, {"url": f"{target.url}/echo", "regions": ["lax"]})
    async with http.get(f"{iad.url}/api/v1/jobs/{job['job_id']}", headers=auth(api_key)) as resp:
        assert (await resp.json())["regions"] == ["iad"]

    # strict refuses with a 503 naming the region
    async with http.post(
        f"{iad.url}/api/v1/jobs",
        json={"url": f"{target.url}/echo", "regions": ["lax"], "region_policy": "strict", "body": "s"},
        headers=auth(api_key),
    ) as resp:
        assert resp.status == 503
        err = (await resp.json())["error"]
    assert err["code"] == "region_unavailable" and "lax" in err["message"]


async def test_a_region_seen_failing_comes_back_only_after_sustained_health(http, start_edge, fast_coordinator):
    from ezthrottle_server.edge.context import CTX

    iad = await start_edge("iad")
    lax = await start_edge("lax", test_outbound_fault=True)  # a test-only switch: lax's outbound path breaks at will
    await wait_state(http, iad, "lax", "up")
    lax.app[CTX].executor.broken = True
    await wait_state(http, iad, "lax", "down")
    back_at = time.monotonic()
    lax.app[CTX].executor.broken = False
    await asyncio.sleep(0.4)
    assert (await regions(http, iad))["lax"]["state"] == "down"  # one good beat is not enough
    await wait_state(http, iad, "lax", "up", timeout_s=5)
    assert time.monotonic() - back_at >= 0.9


async def test_a_region_whose_edges_stopped_cleanly_is_back_as_soon_as_one_beats(http, start_edge, coordinator):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    await wait_state(http, iad, "lax", "up")
    await lax.stop()  # leaves the heartbeat table: stopped, not failing
    await wait_state(http, iad, "lax", "down")
    back_at = time.monotonic()
    await start_edge("lax")
    await wait_state(http, iad, "lax", "up", timeout_s=3)  # recover_after_ms is 5 s here: no hysteresis
    assert time.monotonic() - back_at < 3


async def test_edges_are_listed_from_heartbeats_without_a_coordinator(http, start_edge):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    deadline = time.monotonic() + 2  # each edge caches what it read for a quarter second
    while (view := await regions(http, iad))["lax"]["edges"] != [lax.url] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert view["iad"]["state"] == "unknown" and view["iad"]["edges"] == [iad.url]
    assert view["lax"]["edges"] == [lax.url]
    assert view["ord"]["edges"] == []

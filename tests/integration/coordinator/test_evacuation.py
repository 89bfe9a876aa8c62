"""A region that loses its only edge hands the jobs waiting in it to the healthy regions.

In-process edges and a coordinator on a real Redis; the region's only edge
is stopped (SIGTERM's path: its sends in flight go back to its queue) and
never comes back. ``tests/chaos/test_region_evacuation.py`` kills real
processes with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.common.metrics import JOBS_EVACUATED
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import SHARED
from support.jobs import get_job, submit, wait_final

pytestmark = pytest.mark.asyncio

JOBS = 30


@pytest_asyncio.fixture
async def slow_domain(redis, target):
    """5 requests/s: the jobs wait in their region's queue long enough to be caught there."""
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 5, max_concurrent: 2}}\n"))


async def until_state(http, edge_url: str, region: str, state: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            async with http.get(f"{edge_url}/api/v1/regions") as resp:
                states = {r["id"]: r["state"] for r in (await resp.json())["regions"]}
            if states[region] == state:
                return
            await asyncio.sleep(0.1)


async def test_jobs_waiting_in_a_region_that_loses_its_only_edge_move_to_a_healthy_one(
    http, redis, start_edge, coordinator, api_key, target, slow_domain
):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    await start_edge("ord")
    moved_before = JOBS_EVACUATED.labels("iad", "lax")._value.get()
    jobs = [await submit(http, iad.url, api_key, {"url": f"{target.url}/echo?n={i}"}) for i in range(JOBS)]
    assert all(j["status"] == "queued" for j in jobs)
    await target.wait_for(2, path="/echo")
    await until_state(http, iad.url, "iad", "up")  # judged once: a region never seen is not "down"
    await iad.stop()  # the region's only edge; it never comes back
    domain = domain_of(target.url)
    assert await redis.zcard(keys.pacing_wait(domain, SHARED, "iad")) > 0  # work was stranded there

    views = [await wait_final(http, lax.url, api_key, j["job_id"], timeout_s=30) for j in jobs]
    assert [v["status"] for v in views] == ["success"] * JOBS
    moved = [v for v in views if v["evacuations"]]
    assert moved and all(
        v["winner_region"] == "lax" and v["evacuations"] == [{"from": "iad", "to": "lax", "reason": "region_down"}] for v in moved
    )
    assert all(v["reroutes"] == 1 and v["regions_tried"] == ["iad", "lax"] and v["regions"] == ["lax"] for v in moved)
    assert JOBS_EVACUATED.labels("iad", "lax")._value.get() - moved_before == len(moved)
    sent = Counter(r.query["n"] for r in target.matching("/echo"))
    assert len(sent) == JOBS and max(sent.values()) == 1  # each sent once: the stop handed its sends back
    assert await redis.zcard(keys.pacing_wait(domain, SHARED, "iad")) == 0

    # New work goes around the down region; the moved jobs stay where they are.
    later = await submit(http, lax.url, api_key, {"url": f"{target.url}/echo?later=1", "regions": ["iad"]})
    assert (await wait_final(http, lax.url, api_key, later["job_id"]))["winner_region"] != "iad"


async def test_a_strict_job_waits_its_retry_budget_then_fails_region_unavailable(
    http, redis, start_edge, coordinator, api_key, target, slow_domain
):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    busy = [await submit(http, iad.url, api_key, {"url": f"{target.url}/echo?busy={i}"}) for i in range(6)]
    due_ms = int(time.time() * 1000) + 3000  # due once iad's only edge has stopped: never sent before (it once was)
    strict = await submit(
        http,
        iad.url,
        api_key,
        {
            "url": f"{target.url}/echo?strict=1",
            "regions": ["iad"],
            "region_policy": "strict",
            "retry_policy": {"max_retries": 1},
            "retry_at": due_ms,
        },
    )
    await until_state(http, iad.url, "iad", "up")  # judged once: a region never seen is not "down"
    await iad.stop()
    assert time.time() * 1000 < due_ms, "iad's edge stopped after the strict job was due"
    view = await wait_final(http, lax.url, api_key, strict["job_id"], timeout_s=20)
    assert view["status"] == "failed" and view["error"] == "region_unavailable" and not view["evacuations"], view
    assert not [r for r in target.matching("/echo") if r.query.get("strict")]
    for job in busy:
        assert (await wait_final(http, lax.url, api_key, job["job_id"], timeout_s=20))["status"] == "success"


async def test_a_raced_job_only_loses_the_dead_regions_copy(http, redis, start_edge, coordinator, api_key, target, slow_domain):
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    raced = [await submit(http, iad.url, api_key, {"url": f"{target.url}/echo?r={i}", "regions": ["iad", "lax"]}) for i in range(10)]
    assert all(j["status"] == "racing" for j in raced)
    await until_state(http, iad.url, "iad", "up")  # judged once: a region never seen is not "down"
    await iad.stop()
    await until_state(http, lax.url, "iad", "down")
    views = [await wait_final(http, lax.url, api_key, j["job_id"], timeout_s=20) for j in raced]
    assert all(v["status"] == "success" and not v["evacuations"] for v in views)
    assert {r.query["r"] for r in target.matching("/echo")} == {str(i) for i in range(10)}
    assert (await get_job(http, lax.url, api_key, raced[-1]["job_id"]))["winner_region"] == "lax"


async def test_no_job_is_moved_to_a_region_without_a_live_node(http, redis, start_edge, coordinator, api_key, target, slow_domain):
    """iad and lax lose their edges; ord never had one (never judged, so not "down"). The jobs wait in iad instead of
    in ord for nobody (a Redis failover once sent them there, stranded), and move when lax has an edge again."""
    iad = await start_edge("iad")
    lax = await start_edge("lax")
    to_ord, to_lax = JOBS_EVACUATED.labels("iad", "ord")._value.get(), JOBS_EVACUATED.labels("iad", "lax")._value.get()
    jobs = [await submit(http, iad.url, api_key, {"url": f"{target.url}/echo?n={i}"}) for i in range(JOBS)]
    await target.wait_for(2, path="/echo")
    await until_state(http, iad.url, "iad", "up")
    await iad.stop()
    await lax.stop()

    async def state(region: str) -> str | None:
        raw = await redis.hget(keys.region_states(), region)
        return orjson.loads(raw)["state"] if raw else None

    async with asyncio.timeout(10):
        while (await state("iad"), await state("lax")) != ("down", "down"):
            await asyncio.sleep(0.1)
    assert await state("ord") != "down"
    await asyncio.sleep(1.5)  # six evacuation passes, with nowhere to go
    assert JOBS_EVACUATED.labels("iad", "ord")._value.get() == to_ord
    assert JOBS_EVACUATED.labels("iad", "lax")._value.get() == to_lax
    stranded = sum([await redis.xlen(keys.region_stream(p, "ord")) for p in range(coordinator.settings.partitions)])
    assert stranded == 0

    lax = await start_edge("lax")
    views = [await wait_final(http, lax.url, api_key, j["job_id"], timeout_s=30) for j in jobs]
    assert [v["status"] for v in views] == ["success"] * JOBS
    assert all(e["to"] == "lax" for v in views for e in v["evacuations"]) and any(v["evacuations"] for v in views)
    assert JOBS_EVACUATED.labels("iad", "ord")._value.get() == to_ord

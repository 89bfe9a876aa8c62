"""Multi-region behaviour with the real processes: kill -9 mid-race, a region going down."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.cluster import local_cluster, pids
from support.jobs import auth, submit, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # short attempt timeout: a dead holder's send lease (timeout + 5 s) expires sooner
    env = {"EZT_ATTEMPT_TIMEOUT_S": "2", "EZT_VISIBILITY_TIMEOUT_MS": "1500"}
    with local_cluster(tmp_path_factory.mktemp("regions"), env) as info:
        yield info


async def _unpace(cluster, target) -> None:
    from ezthrottle_server.common.redisconn import connect

    r = connect(cluster["redis_url"])
    try:
        await apply_overrides(r, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    finally:
        await r.aclose()


async def test_kill_9_the_sending_edge_mid_post_race(cluster, target):
    await _unpace(cluster, target)
    edges = cluster["regions"]
    async with aiohttp.ClientSession() as http:
        job = await submit(
            http,
            edges["iad"],
            cluster["api_key"],
            {"url": f"{target.url}/delay/1500", "method": "POST", "body": "charge", "regions": ["iad", "lax", "ord"]},
        )
        [_first] = await target.wait_for(1, "/delay/1500", timeout_s=10)
        with sync_redis.Redis.from_url(cluster["redis_url"], decode_responses=True) as r:
            holder = r.get(keys.send_lease(job["job_id"]))
        assert holder, "one region holds the send lease"
        region = holder.split(":", 1)[0]
        os.kill(pids(cluster)[f"edge-{region}"], signal.SIGKILL)
        survivor = next(url for rid, url in edges.items() if rid != region)
        view = await wait_final(http, survivor, cluster["api_key"], job["job_id"], timeout_s=30)
        assert view["status"] == "success"
        assert len([a for a in view["attempts"] if a["decision"] == "success" and not a.get("lost")]) == 1
        assert view["winner_region"] != region
        sends = target.matching("/delay/1500")
        assert len(sends) == 2  # the killed holder's, then one region after its lease ran out
        assert sends[1].at - sends[0].at >= 1.5  # never two at the same time
    restarted = cluster["cli"]("up")
    assert restarted.returncode == 0, restarted.stderr


async def test_a_stopped_region_is_down_within_3s_and_routing_follows(cluster, target):
    await _unpace(cluster, target)
    edges = cluster["regions"]
    async with aiohttp.ClientSession() as http:
        stopped_at = time.monotonic()
        os.kill(pids(cluster)["edge-ord"], signal.SIGKILL)
        while True:
            async with http.get(f"{edges['iad']}/api/v1/regions") as resp:
                ord_view = next(r for r in (await resp.json())["regions"] if r["id"] == "ord")
            if ord_view["state"] == "down":
                break
            assert time.monotonic() - stopped_at < 6, ord_view
            await asyncio.sleep(0.1)
        took = time.monotonic() - stopped_at
        assert took <= 3.5, f"ord marked down after {took:.1f}s"

        async with http.post(
            f"{edges['iad']}/api/v1/jobs",
            json={"url": f"{target.url}/echo", "regions": ["ord"], "region_policy": "strict"},
            headers=auth(cluster["api_key"]),
        ) as resp:
            assert resp.status == 503 and "ord" in (await resp.json())["error"]["message"]
        job = await submit(http, edges["iad"], cluster["api_key"], {"url": f"{target.url}/echo?f=1", "regions": ["ord"]})
        view = await wait_final(http, edges["iad"], cluster["api_key"], job["job_id"], timeout_s=10)
        assert view["status"] == "success" and "ord" not in view["regions"]
    restarted = cluster["cli"]("up")
    assert restarted.returncode == 0, restarted.stderr

"""Ready means ready: when `make up-local` returns, every edge routes and runs jobs in its own region.

Issue 14: the first submissions after `up` got 503 region_unavailable for
seconds, because every region started `down` (recovering): the region states
a previous run published, every edge gone, stay in Redis (its AOF). A region
never seen failing is usable as soon as an edge beats, and `up` returns only
once every region is usable in every edge's view.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from support.cluster import local_cluster
from support.jobs import auth, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


async def left_by_a_previous_run(redis: aioredis.Redis) -> None:
    """What `make down-local` leaves in Redis: each region published down, its edges gone."""
    now_ms = int(time.time() * 1000)
    stopped = {
        "state": "down",
        "reason": "no live node (every node stopped)",
        "since_ms": now_ms - 60_000,
        "nodes": [],
        "edges": [],
        "seen": True,
    }
    await redis.hset(
        keys.region_states(), mapping={rid: orjson.dumps({**stopped, "updated_ms": now_ms - 1000}) for rid in ("iad", "lax", "ord")}
    )


async def submit_forty(http: aiohttp.ClientSession, info: dict[str, Any], url: str) -> list[tuple[str, int, dict[str, Any]]]:
    edges = list(info["regions"].items())

    async def one(i: int) -> tuple[str, int, dict[str, Any]]:
        region, base = edges[i % len(edges)]
        async with http.post(f"{base}/api/v1/jobs", json={"url": f"{url}?n={i}"}, headers=auth(info["api_key"])) as resp:
            return region, resp.status, await resp.json()

    return await asyncio.gather(*(one(i) for i in range(40)))


async def test_forty_submissions_right_after_up_all_run_in_their_edges_region(tmp_path, redis, redis_url, target):
    await left_by_a_previous_run(redis)
    (tmp_path / "domains.yaml").write_text(f"domains:\n  {domain_of(target.url)}: {{rps: 200, max_concurrent: 40}}\n")
    with local_cluster(tmp_path, {"REDIS_URL": redis_url}) as info:
        async with aiohttp.ClientSession() as http:
            answers = await submit_forty(http, info, f"{target.url}/echo")  # at once: `up` has returned
            refused = [(region, status, body) for region, status, body in answers if status != 201]
            assert not refused, refused
            views = await asyncio.gather(
                *(wait_final(http, info["regions"][region], info["api_key"], body["job_id"], timeout_s=20) for region, _, body in answers)
            )
        for (region, _, _), view in zip(answers, views, strict=True):
            assert view["status"] == "success", view
            assert view["regions"] == [region] and view["winner_region"] == region, view

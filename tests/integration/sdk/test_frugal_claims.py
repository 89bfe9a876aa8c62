"""``POST /api/v1/jobs/{job_id}/frugal-claims/{step_id}``: one claim wins, per step, per customer."""

from __future__ import annotations

import asyncio

import pytest

from ezthrottle_server.common import keys
from support.jobs import auth, submit

pytestmark = pytest.mark.asyncio


async def claim(http, edge, key, job_id, step_id):
    async with http.post(f"{edge.url}/api/v1/jobs/{job_id}/frugal-claims/{step_id}", headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def test_exactly_one_concurrent_claim_wins_and_it_lasts_as_long_as_the_job(http, start_edge, api_key, target, redis):
    edges = [await start_edge("iad"), await start_edge("lax")]
    job_id = (await submit(http, edges[0].url, api_key, {"url": f"{target.url}/echo"}))["job_id"]
    step_id = f"{job_id}:on_success"
    results = await asyncio.gather(*(claim(http, edges[i % 2], api_key, job_id, step_id) for i in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 9
    won = next(body for status, body in results if status == 201)
    assert won == {"status": "claimed", "job_id": job_id, "step_id": step_id}
    assert all(body["error"]["code"] == "conflict" for status, body in results if status == 409)
    ttl = await redis.ttl(keys.frugal_claim(job_id, step_id))
    assert 0 < ttl <= edges[0].settings.job_ttl_s
    # Another relation of the same job is another step.
    assert (await claim(http, edges[1], api_key, job_id, f"{job_id}:on_failure"))[0] == 201


async def test_claims_are_refused_for_other_customers_and_bad_step_ids(http, edge, api_key, other_api_key, target, redis):
    job_id = (await submit(http, edge.url, api_key, {"url": f"{target.url}/echo"}))["job_id"]
    status, body = await claim(http, edge, other_api_key, job_id, f"{job_id}:on_success")
    assert status == 404 and body["error"]["code"] == "not_found"
    for step_id in (f"{job_id}:next", "job_1:on_success", "on_success"):
        status, body = await claim(http, edge, api_key, job_id, step_id)
        assert status == 400 and body["error"]["field"] == "step_id", step_id
    status, _ = await claim(http, edge, api_key, "job_nope", "job_nope:on_success")
    assert status == 404
    async with http.post(f"{edge.url}/api/v1/jobs/{job_id}/frugal-claims/{job_id}:fallback") as resp:
        assert resp.status == 401
    assert await redis.keys("*:frugal:*") == []  # nothing refused left a claim behind

"""Issue 14, quota: workflow children are requests, as the README's tiers read them.

A tier includes and caps *requests* a month. A job's ``on_success`` child (and
``on_failure``, fallbacks) is sent like a submission, so it counts once against
its customer's month, and ``GET /api/v1/usage`` shows it. Before, children
were free: a customer at its cap could keep sending through workflow chains.
A child the server starts is accepted work, so it runs even past the cap; new
submissions are then refused.
"""

from __future__ import annotations

import asyncio

import pytest

from ezthrottle_server.common.quotas import Tier
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.jobs import auth, get_job, submit, wait_final

pytestmark = pytest.mark.asyncio

TIERS = {"free": Tier("free", 2, 3)}


async def usage(http, edge, key) -> dict:
    async with http.get(f"{edge.url}/api/v1/usage", headers=auth(key)) as resp:
        assert resp.status == 200
        return await resp.json()


@pytest.mark.parametrize("partitions", [1, 4])
async def test_workflow_children_count_against_the_month_and_show_in_usage(
    http, redis, start_edge, start_coordinator, api_key, other_api_key, target, partitions
):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    edge = await start_edge("iad", tiers=TIERS, partitions=partitions)
    await start_coordinator(node_id="coordinator-quota", tiers=TIERS, partitions=partitions)
    chain = {
        "url": f"{target.url}/echo?step=1",
        "on_success": {"url": f"{target.url}/echo?step=2", "on_success": {"url": f"{target.url}/echo?step=3"}},
    }
    job = await submit(http, edge.url, api_key, chain)
    async with asyncio.timeout(20):  # the root, its child and its grandchild: three requests
        while (await usage(http, edge, api_key))["count"] < 3:
            await asyncio.sleep(0.05)
    view = await usage(http, edge, api_key)
    assert view["count"] == 3 and view["overage"] == 1 and view["remaining"] == 0, view
    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo?more"}, headers=auth(api_key)) as resp:
        assert resp.status == 429 and (await resp.json())["error"]["code"] == "quota_exceeded"  # the children used the cap
    child = (await get_job(http, edge.url, api_key, job["job_id"]))["workflow"]["children"][0]
    assert (await wait_final(http, edge.url, api_key, child["job_id"]))["status"] == "success"
    assert (await usage(http, edge, other_api_key))["count"] == 0  # per customer

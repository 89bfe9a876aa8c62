"""Monthly quotas: atomic counting, duplicates free, 429 over the cap, usage view."""

import asyncio

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.quotas import Tier, month_of, seconds_until_next_month
from support.jobs import auth, job_records

pytestmark = pytest.mark.asyncio
# One partition: submit.lua counts and caps in one step. Several (a Redis
# Cluster): the cap is held in the customer's own counter first.
PARTITIONS = pytest.mark.parametrize("partitions", [1, 4])

TINY = {"free": Tier("free", 2, 3), "pro": Tier("pro", 5, None)}


async def post(http, edge, key, payload):
    async with http.post(f"{edge.url}/api/v1/jobs", json=payload, headers=auth(key)) as resp:
        return resp.status, await resp.json(), resp.headers


async def usage(http, edge, key):
    async with http.get(f"{edge.url}/api/v1/usage", headers=auth(key)) as resp:
        assert resp.status == 200
        return await resp.json()


@PARTITIONS
async def test_cap_is_enforced_duplicates_are_free_and_usage_shows_overage(http, start_edge, api_key, target, redis, partitions):
    edge = await start_edge("iad", tiers=TINY, partitions=partitions)
    for i in range(3):
        status, _, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": str(i)})
        assert status == 201
    status, body, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "0"})
    assert status == 200 and body["status"] == "duplicate"  # a duplicate is free, even at the cap

    status, body, headers = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "over"})
    assert status == 429 and body["error"]["code"] == "quota_exceeded"
    assert "free" in body["error"]["message"]
    assert 0 < int(headers["Retry-After"]) <= seconds_until_next_month() + 1
    assert len(await job_records(redis)) == 3

    view = await usage(http, edge, api_key)
    storage = view.pop("storage")
    assert storage["budget_bytes"] is None and storage["bytes"] > 3 * 100  # no budget in the local profile; three records held
    assert view == {
        "customer_id": "acme",
        "month": f"{month_of()[:4]}-{month_of()[4:]}",
        "tier": "free",
        "count": 3,
        "included": 2,
        "cap": 3,
        "overage": 1,
        "remaining": 0,
    }


@PARTITIONS
async def test_concurrent_submissions_never_overshoot_the_cap(http, start_edge, api_key, target, redis, partitions):
    edge = await start_edge("iad", tiers=TINY, partitions=partitions)
    bodies = [f"c{i}" for i in range(20)]
    results = await asyncio.gather(*(post(http, edge, api_key, {"url": f"{target.url}/echo", "body": b}) for b in bodies))
    statuses = sorted(s for s, _, _ in results)
    assert statuses.count(201) == 3 and statuses.count(429) == 17
    created = [b for b, (s, _, _) in zip(bodies, results) if s == 201]
    for b in created:  # a duplicate is free, even at the cap
        status, body, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": b})
        assert status == 200 and body["status"] == "duplicate"
    assert (await usage(http, edge, api_key))["count"] == 3 and len(await job_records(redis)) == 3
    if partitions > 1:
        assert await redis.get(keys.quota_reservations("acme", month_of())) == "3"  # refusals hold nothing, duplicates nothing


async def test_tiers_are_per_customer_and_uncapped_tiers_never_refuse(http, start_edge, api_key, other_api_key, target, redis):
    await redis.hset(keys.customer("globex"), "tier", "pro")
    edge = await start_edge("iad", tiers=TINY)
    for i in range(7):
        status, _, _ = await post(http, edge, other_api_key, {"url": f"{target.url}/echo", "body": f"g{i}"})
        assert status == 201
    view = await usage(http, edge, other_api_key)
    assert view["tier"] == "pro" and view["cap"] is None and view["remaining"] is None and view["overage"] == 2
    assert (await usage(http, edge, api_key))["count"] == 0  # the other customer's usage is its own

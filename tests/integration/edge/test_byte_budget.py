"""A customer's byte budget of Redis (common/storage.py): one customer's jobs cannot fill Redis for the others.

Its open jobs' records count from the step that writes them; an ended job's
record (with its result) counts until it expires; a submission over the
budget is refused whole (429 ``overloaded``, nothing written), and another
customer is not affected.
"""

from __future__ import annotations

import time

import pytest

from ezthrottle_server.common import acceptance, keys, storage
from ezthrottle_server.common.job_scripts import Submitted
from ezthrottle_server.common.jobs import validate_job
from ezthrottle_server.common.redisconn import Scripts
from support.jobs import auth, job_records, poll_view, submit, wait_final
from support.services import make_settings

pytestmark = pytest.mark.asyncio

BODY = "x" * 4000
BUDGET = 20_000


async def post(http, edge, key, body):
    async with http.post(f"{edge.url}/api/v1/jobs", json=body, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def open_bytes(redis, partitions: int, customer: str = "acme") -> int:
    return sum([int(await redis.hget(keys.queued(p), storage.open_field(customer)) or 0) for p in range(partitions)])


async def kept_bytes(redis, partitions: int, ttl_s: int, customer: str = "acme") -> int:
    buckets = storage.live_buckets(ttl_s, int(time.time() * 1000))
    return sum([int(await redis.hget(keys.kept_bytes(p, b), customer) or 0) for p in range(partitions) for b in buckets])


async def fill(http, edge, key, job) -> tuple[list[str], dict]:
    """Submit ``job`` (bodies made unique) until the budget refuses one; bounded."""
    accepted: list[str] = []
    for i in range(20):
        status, body = await post(http, edge, key, {**job, "body": f"{i:03d}{BODY}"})
        if status == 429:
            return accepted, body
        assert status == 201, body
        accepted.append(body["job_id"])
    raise AssertionError(f"20 jobs of {len(BODY)} bytes were accepted under a budget of {BUDGET}")


@pytest.mark.parametrize("partitions", [1, 4])
async def test_open_jobs_fill_the_budget_then_the_customer_is_shed_and_no_other(
    http, start_edge, api_key, other_api_key, target, redis, partitions
):
    edge = await start_edge("iad", admission_max_bytes_per_customer=BUDGET, partitions=partitions)
    parked = {"url": f"{target.url}/echo", "retry_at": int(time.time() * 1000) + 3_600_000}
    accepted, refused = await fill(http, edge, api_key, parked)

    assert refused["error"]["code"] == "overloaded"
    assert f"budget of {BUDGET} bytes" in refused["error"]["message"], refused
    sizes = [int(await redis.hget(keys.job(j), "bytes")) for j in accepted]
    assert all(s > len(BODY) for s in sizes)  # the record as written: the body and the rest of the spec
    used = await open_bytes(redis, partitions)
    assert used == sum(sizes) <= BUDGET  # counted exactly, and never past the budget
    assert used + min(sizes) > BUDGET  # the refused one would have passed it
    assert len(await job_records(redis)) == len(accepted)  # nothing of the refused job was written

    async with http.get(f"{edge.url}/api/v1/usage", headers=auth(api_key)) as resp:
        assert (await resp.json())["storage"] == {"bytes": used, "budget_bytes": BUDGET}  # what the customer can see of it
    status, body = await post(http, edge, other_api_key, {**parked, "body": BODY})
    assert status == 201, body  # another customer's budget is its own
    async with http.get(f"{edge.url}/readyz") as resp:
        assert (await resp.json())["admission"]["max_bytes_per_customer"] == BUDGET

    # A cancelled job's record is kept until it expires: its bytes move from open to kept, and still count.
    async with http.delete(f"{edge.url}/api/v1/jobs/{accepted[0]}", headers=auth(api_key)) as resp:
        assert resp.status == 200, await resp.json()
    assert await open_bytes(redis, partitions) == used - sizes[0]
    assert await kept_bytes(redis, partitions, edge.settings.job_ttl_s) == sizes[0]
    status, body = await post(http, edge, api_key, {**parked, "body": f"999{BODY}"})
    assert status == 429, body


async def test_an_ended_job_counts_until_its_record_expires(http, start_edge, api_key, target, redis):
    ttl_s = 3
    edge = await start_edge("iad", admission_max_bytes_per_customer=BUDGET, job_ttl_s=ttl_s)
    now = {"url": f"{target.url}/echo"}
    accepted: list[str] = []
    refused: dict = {}
    for i in range(20):  # jobs that run at once: each ends before the next is sent
        status, refused = await post(http, edge, api_key, {**now, "body": f"{i:03d}{BODY}"})
        if status == 429:
            break
        assert status == 201, refused
        accepted.append(refused["job_id"])
        assert (await wait_final(http, edge.url, api_key, accepted[-1]))["status"] == "success"
    assert status == 429 and 1 <= len(accepted) < 5, (status, refused, accepted)  # a record and its echoed result: about 8 KB a job

    assert await open_bytes(redis, 1) == 0  # none open: they all ended
    assert await redis.hget(keys.queued(0), storage.open_field("acme")) is None  # nothing left behind
    kept = await kept_bytes(redis, 1, ttl_s)
    assert kept > len(accepted) * 2 * len(BODY)  # each record and its result

    # Once their records expire the budget is free again; the bytes are counted at least as long as they are held.
    async def retry() -> dict:
        status, body = await post(http, edge, api_key, {**now, "body": f"again{BODY}"})
        return {"status": status, "body": body, "first_record": await redis.exists(keys.job(accepted[0]))}

    started = time.monotonic()
    again = await poll_view(retry, lambda v: v["status"] == 201, lambda v: f"still refused: {v}", timeout_s=15, poll_s=0.5)
    assert again["first_record"] == 0  # refused for as long as the record was there
    assert time.monotonic() - started >= 0  # (the poll's first answer may already be the accepted one)


async def test_a_schedules_job_over_the_budget_is_refused_with_nothing_written(redis, redis_url, target):
    settings = make_settings("coordinator", redis_url).with_overrides(admission_max_bytes_per_customer=BUDGET)
    scripts = Scripts(redis)
    budget = storage.ByteBudget(settings, redis)
    replies = []
    for i in range(10):
        job = validate_job({"url": f"{target.url}/echo", "body": f"{i:03d}{BODY}", "idempotent_key": f"tick-{i}"}, ["iad"])
        replies.append(
            await acceptance.accept_job(redis, scripts, settings, job, "acme", ["iad"], f"127.0.0.1:{target.port}", budget=budget)
        )
        if replies[-1].submitted is Submitted.BYTES_FULL:
            break
    created = [r for r in replies if r.submitted is Submitted.CREATED]
    assert replies[-1].submitted is Submitted.BYTES_FULL and 1 <= len(created) < 10
    assert sum(r.bytes for r in created) == await open_bytes(redis, 1) <= BUDGET
    assert len(await job_records(redis)) == len(created)


async def test_every_way_a_job_ends_moves_its_bytes_from_open_to_kept(http, edge, coordinator, api_key, target, redis):
    """Succeeded, failed, cancelled, expired by its deadline's timer: none is left counted as open, and each
    record (with its result) is counted as kept, exactly what the partition's ended counter says."""
    parked = int(time.time() * 1000) + 3_600_000
    jobs = {
        "success": await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "body": BODY}),
        "failed": await submit(http, edge.url, api_key, {"url": f"{target.url}/status/400", "body": BODY}),
        "cancelled": await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=parked", "body": BODY, "retry_at": parked}),
    }
    # The domain's two send slots held for 2.5 s: a job with a deadline 0.4 s away waits past it, and its timer ends it.
    busy = [await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/2500?busy={i}"}) for i in range(2)]
    await target.wait_for(2, path="/delay/2500")
    deadline = int(time.time() * 1000) + 400
    jobs["expired"] = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=late", "body": BODY, "start_before_ms": deadline})
    sizes = {k: int(await redis.hget(keys.job(j["job_id"]), "bytes")) for k, j in jobs.items()}
    sizes.update({f"busy{i}": int(await redis.hget(keys.job(j["job_id"]), "bytes")) for i, j in enumerate(busy)})
    async with http.delete(f"{edge.url}/api/v1/jobs/{jobs['cancelled']['job_id']}", headers=auth(api_key)) as resp:
        assert resp.status == 200, await resp.json()
    for state, job in [*jobs.items(), *(("success", j) for j in busy)]:
        assert (await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10))["status"] == state

    assert await redis.hget(keys.queued(0), storage.open_field("acme")) is None  # nothing left open
    kept = await kept_bytes(redis, 1, edge.settings.job_ttl_s)
    assert kept == int(await redis.hget(keys.queued(0), storage.ended_field("acme")))
    assert kept >= sum(sizes.values()) + len(BODY)  # every record, and the echoed body of the success's answer at least


async def test_asking_for_usage_often_costs_redis_no_more_than_once_a_second(http, start_edge, api_key, redis):
    """GET /api/v1/usage reads the customer's bytes through the edge's one-second view: a customer polling it
    in a loop cannot turn each request into a read of every partition's counters."""
    edge = await start_edge("iad", admission_max_bytes_per_customer=BUDGET, partitions=4)

    async def hmget_calls() -> int:
        return int((await redis.info("commandstats")).get("cmdstat_hmget", {}).get("calls", 0))

    before = await hmget_calls()
    started = time.monotonic()
    for _ in range(50):
        async with http.get(f"{edge.url}/api/v1/usage", headers=auth(api_key)) as resp:
            assert resp.status == 200 and (await resp.json())["storage"]["budget_bytes"] == BUDGET
    reads = (await hmget_calls() - before) / 4  # one HMGET a partition per read
    assert 1 <= reads <= 1 + (time.monotonic() - started) / storage.FRESH_S, reads

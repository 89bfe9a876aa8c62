"""``submit_many``: many jobs in batches of 100 (``POST /api/v1/jobs/batch``) against a real edge, sync and async."""

from __future__ import annotations

import asyncio
import time

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, Step, ValidationError
from ezthrottle_server.common.metrics import API_REQUESTS
from ezthrottle_server.common.quotas import Tier
from integration.sdk.helpers import older_edge
from support.jobs import job_records, wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def batch_requests() -> float:
    return API_REQUESTS.labels("/api/v1/jobs/batch", "200")._value.get()


async def test_many_jobs_go_in_batches_of_a_hundred_and_answer_in_order(start_edge, api_key, target, redis):
    edge = await start_edge("iad")
    later_ms = int(time.time() * 1000) + 3_600_000  # parked: the edge only accepts them
    jobs: list = [{"url": f"{target.url}/echo", "method": "POST", "body": f"order-{i}", "retry_at": later_ms} for i in range(250)]
    jobs[4] = {**jobs[3]}  # the same request: a duplicate of job 3 (HASH key)
    jobs[7] = Step().url(f"{target.url}/echo").method("PUT").body("step").idempotent_key("from-a-step").retry_at(later_ms)
    before = batch_requests()
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        results = await client.submit_many(jobs)
    assert batch_requests() - before == 3  # 100 + 100 + 50
    assert len(results) == 250
    assert [r["status"] for r in results].count("duplicate") == 1 and results[4]["status"] == "duplicate"
    assert results[4]["job_id"] == results[3]["job_id"]
    assert results[7]["idempotent_key"] == "from-a-step"
    assert len({r["job_id"] for r in results}) == 249
    assert len(await job_records(redis)) == 249
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:  # in order: the i-th result is the i-th job
        for i in (0, 7, 99, 100, 249):
            view = await client.get_job(results[i]["job_id"])
            assert view["method"] == ("PUT" if i == 7 else "POST") and view["status"] == "scheduled"
    assert results[249]["job_id"] != results[248]["job_id"]


async def test_the_sync_client_submits_many_and_the_jobs_run(http, start_edge, api_key, target):
    edge = await start_edge("iad")
    with EZThrottle(api_key, base_url=edge.url) as client:  # the edge serves from this loop: the sync client in a thread
        results = await asyncio.to_thread(client.submit_many, [{"url": f"{target.url}/echo?n={i}"} for i in range(3)], batch_size=2)
    assert [r["status"] for r in results] == ["queued"] * 3
    for i, r in enumerate(results):
        view = await wait_final(http, edge.url, api_key, r["job_id"])
        assert view["status"] == "success" and view["url"] == f"{target.url}/echo?n={i}"


async def test_an_invalid_job_is_named_by_its_index_in_the_list(start_edge, api_key, target, redis):
    edge = await start_edge("iad")
    jobs: list = [{"url": f"{target.url}/echo", "body": str(i)} for i in range(150)]
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        with pytest.raises(ValidationError, match=r"jobs\[120\]: url"):
            await client.submit_many([*jobs[:120], {"url": "ftp://x"}, *jobs[120:]])
        with pytest.raises(ValidationError, match=r"jobs\[3\]: unknown field"):
            await client.submit_many([*jobs[:3], {"url": f"{target.url}/echo", "colour": "red"}])
        with pytest.raises(ValidationError, match=r"jobs\[0\]: a FRUGAL step"):
            await client.submit_many([Step().url(f"{target.url}/echo").type("frugal")])
        assert await job_records(redis) == []  # nothing was sent
        # Only the server knows its regions: it refuses the second request as a whole, naming the job in the list.
        jobs[130] = {**jobs[130], "regions": ["mars"]}
        with pytest.raises(ValidationError, match=r"jobs\[130\]\.regions") as refused:
            await client.submit_many(jobs)
        assert refused.value.status_code == 400
    assert len(await job_records(redis)) == 100  # the first request's; nothing of the second's


async def test_jobs_refused_at_acceptance_are_errors_in_their_place(start_edge, api_key, target):
    edge = await start_edge("iad", tiers={"free": Tier("free", 2, 3)})
    later_ms = int(time.time() * 1000) + 3_600_000
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        results = await client.submit_many([{"url": f"{target.url}/echo", "body": str(i), "retry_at": later_ms} for i in range(5)])
    assert [r.get("status") for r in results] == ["queued"] * 3 + [None] * 2
    assert [r["error"]["code"] for r in results[3:]] == ["quota_exceeded"] * 2
    assert all(r["error"]["retry_after_s"] > 0 for r in results[3:])


async def test_a_server_without_the_batch_route_gets_one_job_per_request(start_edge, api_key, target, redis):
    """An older edge (or any server) that answers 404 to POST /api/v1/jobs/batch: submit_many still submits every job,
    one POST /api/v1/jobs each, with the same results, and does not ask for the batch route again."""
    edge = await start_edge("iad", tiers={"free": Tier("free", 3, 4)})
    seen: list[str] = []
    async with older_edge(edge.url, seen) as url:
        later_ms = int(time.time() * 1000) + 3_600_000
        jobs: list = [{"url": f"{target.url}/echo", "body": str(i), "retry_at": later_ms} for i in range(6)]
        jobs[2] = {**jobs[1]}  # a duplicate of job 1
        async with AsyncEZThrottle(api_key, base_url=url) as client:
            results = await client.submit_many(jobs, batch_size=3)
            again = await client.submit_many(jobs[:1])
        # sent concurrently, one per request: which of jobs 1 and 2 is the duplicate, and which job the spent quota
        # refuses (the tier takes 4), follows their arrival
        assert sorted(r.get("status") for r in results[1:3]) == ["duplicate", "queued"] and results[1]["job_id"] == results[2]["job_id"]
        unique = [results[i] for i in (0, 1, 3, 4, 5)] if results[1]["status"] == "queued" else [results[i] for i in (0, 2, 3, 4, 5)]
        assert [r.get("status") for r in unique].count("queued") == 4
        [refused] = [r for r in unique if "error" in r]
        assert refused["error"]["code"] == "quota_exceeded" and refused["error"]["retry_after_s"] > 0
        if "error" not in results[0]:
            assert again[0]["status"] == "duplicate" and again[0]["job_id"] == results[0]["job_id"]
        assert len(await job_records(redis)) == 4
        batch_asks = [s for s in seen if s == "POST /api/v1/jobs/batch"]
        assert 1 <= len(batch_asks) <= 2  # the two first requests went out together; never again after the 404
        assert seen.count("POST /api/v1/jobs") == 7


async def test_on_four_partitions_the_quota_still_takes_a_batchs_jobs_in_order(start_edge, api_key, target):
    # Each job's quota is held in the customer's counter of the month, wherever its partition: the batch's holds reach
    # Redis in the batch's order, so the cap refuses its last jobs, not whichever answers came back late.
    edge = await start_edge("iad", partitions=4, tiers={"free": Tier("free", 2, 3)})
    later_ms = int(time.time() * 1000) + 3_600_000
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        results = await client.submit_many([{"url": f"{target.url}/echo", "body": str(i), "retry_at": later_ms} for i in range(8)])
    assert [r.get("status") for r in results] == ["queued"] * 3 + [None] * 5
    assert [r["error"]["code"] for r in results[3:]] == ["quota_exceeded"] * 5

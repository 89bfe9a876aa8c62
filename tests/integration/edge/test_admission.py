"""Admission control sheds new work over the Redis memory ceiling; accepted work runs."""

import time

import pytest

from ezthrottle_server.edge.context import CTX
from support.jobs import auth, job_records, wait_final

pytestmark = pytest.mark.asyncio


async def post(http, edge, key, body):
    async with http.post(f"{edge.url}/api/v1/jobs", json=body, headers=auth(key)) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_over_the_ceiling_new_work_is_shed_with_doubling_retry_after(http, start_edge, api_key, other_api_key, target, redis):
    edge = await start_edge("iad")
    # A job accepted before the squeeze must still run.
    status, accepted, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "before"})
    assert status == 201

    admission = edge.app[CTX].admission
    admission.settings = admission.settings.with_overrides(admission_max_redis_memory_bytes=1)
    await admission.refresh()

    waits = []
    for i in range(4):
        status, body, headers = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": f"shed-{i}"})
        assert status == 429 and body["error"]["code"] == "overloaded"
        waits.append(int(headers["Retry-After"]))
    assert waits == [1, 2, 4, 8]
    status, _, headers = await post(http, edge, other_api_key, {"url": f"{target.url}/echo", "body": "other"})
    assert status == 429 and headers["Retry-After"] == "1"  # streaks are per customer

    async with http.get(f"{edge.url}/readyz") as resp:
        state = (await resp.json())["admission"]
    assert state["accepting"] is False and state["redis_memory_limit_bytes"] == 1 and state["reason"]
    assert len(await job_records(redis)) == 1  # nothing of the shed work was written

    view = await wait_final(http, edge.url, api_key, accepted["job_id"])
    assert view["status"] == "success"  # accepted work is never dropped

    admission.settings = admission.settings.with_overrides(admission_max_redis_memory_bytes=0)
    await admission.refresh()
    status, _, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "after"})
    assert status == 201
    status, _, headers = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "after-2"})
    assert status == 201
    async with http.get(f"{edge.url}/healthz") as resp:
        assert (await resp.json())["admission"]["accepting"] is True


@pytest.mark.parametrize("partitions", [1, 4])
async def test_a_customer_over_its_queued_ceiling_is_shed_until_its_jobs_finish(
    http, start_edge, api_key, other_api_key, target, redis, redis_url, partitions
):
    from ezthrottle_server.common import keys
    from ezthrottle_server.coordinator.app import create_app as create_coordinator
    from support.services import RunningApp, make_settings

    edge = await start_edge("iad", admission_max_queued_per_customer=3, partitions=partitions)
    due_ms = int(time.time() * 1000) + 1500  # parked until then: not final, so they count
    accepted = []
    for i in range(3):
        status, body, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": f"q-{i}", "retry_at": due_ms})
        assert status == 201, body
        accepted.append(body["job_id"])

    waits = []
    for i in range(3):
        status, body, headers = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": f"over-{i}"})
        assert status == 429 and body["error"]["code"] == "overloaded", body
        waits.append(int(headers["Retry-After"]))
    assert waits == [1, 2, 4]
    # A duplicate of accepted work is still answered; another customer is not affected.
    status, body, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "q-0", "retry_at": due_ms})
    assert status == 200 and body["status"] == "duplicate"
    status, _, _ = await post(http, edge, other_api_key, {"url": f"{target.url}/echo", "body": "other"})
    assert status == 201
    queued = [await redis.hget(keys.queued(p), "acme") for p in range(partitions)]
    assert sum(int(n or 0) for n in queued) == 3
    assert len(await redis.keys("ezt:*:job:*[0-9]")) == 4  # nothing of the shed work was written

    coordinator = await RunningApp(
        create_coordinator(make_settings("coordinator", redis_url, node_id="coordinator-queued", partitions=partitions)),
        make_settings("coordinator", redis_url, partitions=partitions),
    ).start()
    try:
        for job_id in accepted:
            assert (await wait_final(http, edge.url, api_key, job_id))["status"] == "success"
    finally:
        await coordinator.stop()
    assert [await redis.hget(keys.queued(p), "acme") for p in range(partitions)] == [None] * partitions  # taken off when final
    status, _, _ = await post(http, edge, api_key, {"url": f"{target.url}/echo", "body": "after"})
    assert status == 201

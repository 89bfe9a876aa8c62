"""Admission control sheds new work over the Redis memory ceiling; accepted work runs."""

import pytest

from ezthrottle_server.edge.context import CTX
from support.jobs import auth, wait_final

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
    assert len(await redis.keys("ezt:{ezt:p0}:job:*[0-9]")) == 1  # nothing of the shed work was written

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

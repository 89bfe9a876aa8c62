"""Hostile input cannot make a job loop, park forever, or answer 500 (issue: promises under hostile input).

Before: a header value with a control character, a header name ending in
``\\n`` or an idempotency key with a newline (sent as ``Idempotency-Key``)
were accepted; the HTTP client refused to send them, the attempt crashed,
the lease was kept and the job granted again every visibility timeout,
forever. A ``retry_at`` of 2^64-1 parked a job for good, metadata nested
300 deep answered 500 (the encoder's depth limit), and Redis out of memory
answered 500.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.metrics import ATTEMPT_CRASHES
from support.jobs import auth, get_job, submit, wait_final

pytestmark = pytest.mark.asyncio


async def post_job(http: Any, edge: Any, api_key: str, payload: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{edge.url}/api/v1/jobs", json=payload, headers=auth(api_key)) as resp:
        return resp.status, await resp.json()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"headers": {"X-A": "\u0001"}}, "headers.X-A"),
        ({"headers": {"X-A": "a\u007fb"}}, "headers.X-A"),
        ({"headers": {"X-A": "a\nb"}}, "headers.X-A"),
        ({"headers": {"X-A\n": "v"}}, "headers.X-A\n"),
        ({"idempotent_key": "a\nb"}, "idempotent_key"),
        ({"idempotent_key": "a\u0000b"}, "idempotent_key"),
        ({"fallback_job": {"url": "{url}/echo", "headers": {"X-B": "\u0002"}}}, "fallback_job.headers.X-B"),
        ({"on_success": {"url": "{url}/echo", "idempotent_key": "x\ry"}}, "on_success.idempotent_key"),
    ],
)
async def test_what_the_http_client_would_refuse_is_refused_at_the_door(http, edge, api_key, target, redis, payload, field):
    body = orjson.loads(orjson.dumps(payload).replace(b"{url}", target.url.encode()))
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", **body})
    assert status == 400 and answer["error"]["code"] == "invalid_field" and answer["error"]["field"] == field, answer
    assert not [k async for k in redis.scan_iter(match="ezt:*job:job_*")]  # nothing written


async def test_a_tab_in_a_header_value_is_sent_as_it_is(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "headers": {"X-A": "a\tb"}})
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    assert target.matching("/echo")[0].headers["X-A"] == "a\tb"


async def test_an_attempt_that_keeps_crashing_fails_its_job_with_internal_error(http, redis, start_edge, coordinator, api_key, target):
    """A record the door would now refuse (written by an older version) crashes its attempts: the third fails the job."""
    edge = await start_edge("iad", visibility_timeout_ms=400)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?bad=1", "retry_at": int(time.time() * 1000) + 1500})
    record = keys.job(job["job_id"])
    spec = orjson.loads(await redis.hget(record, "spec"))
    spec["headers"] = {"X-A": "\u0001"}  # what the client refuses to send
    await redis.hset(record, "spec", orjson.dumps(spec))
    crashes_before = ATTEMPT_CRASHES.labels("iad")._value.get()
    good = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?good=1"})

    view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=20)
    assert view["status"] == "failed" and view["error"] == "internal_error", view
    assert ATTEMPT_CRASHES.labels("iad")._value.get() - crashes_before == 3
    assert await redis.hget(record, "crashes") == "3"
    assert not target.matching("/echo") or all(r.query.get("bad") is None for r in target.matching("/echo"))
    assert (await wait_final(http, edge.url, api_key, good["job_id"]))["status"] == "success"  # the domain goes on
    await asyncio.sleep(1.0)  # two more lease lifetimes: a failed job is never granted again
    assert await redis.hget(record, "crashes") == "3"


async def test_retry_at_beyond_the_horizon_is_refused(http, start_edge, api_key, target):
    edge = await start_edge("iad", retry_at_horizon_ms=60_000)
    now_ms = int(time.time() * 1000)
    for far in (2**64 - 1, now_ms + 120_000):
        status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "retry_at": far})
        assert status == 400 and answer["error"]["field"] == "retry_at", answer
    status, answer = await post_job(
        http, edge, api_key, {"url": f"{target.url}/echo", "on_success": {"url": f"{target.url}/e", "retry_at": 2**53}}
    )
    assert status == 400 and answer["error"]["field"] == "on_success.retry_at", answer
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "retry_at": now_ms + 30_000})
    assert status == 201 and answer["status"] == "queued"
    assert (await get_job(http, edge.url, api_key, answer["job_id"]))["status"] == "scheduled"


async def test_deep_metadata_is_a_400_not_a_500(http, edge, api_key, target):
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "metadata": nested(300)})
    assert status == 400 and answer["error"]["field"] == "metadata", answer
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "metadata": {"a": [nested(17)]}})
    assert status == 400 and answer["error"]["field"] == "metadata", answer
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "metadata": nested(16)})
    assert status == 201, answer


async def test_at_most_ten_webhooks_and_no_url_twice(http, edge, api_key, target, receiver):
    hooks = [{"url": f"{receiver.url}/h{i}"} for i in range(11)]
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "webhooks": hooks})
    assert status == 400 and answer["error"]["field"] == "webhooks", answer
    twice = [{"url": f"{receiver.url}/same"}, {"url": f"{receiver.url}/same", "has_quorum_vote": False}]
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "webhooks": twice})
    assert status == 400 and answer["error"]["field"] == "webhooks[1].url", answer
    status, answer = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "webhooks": hooks[:10]})
    assert status == 201, answer


async def test_redis_out_of_memory_is_a_503_with_retry_after(http, redis, start_edge, api_key, target):
    edge = await start_edge("iad", admission_max_redis_memory_bytes=2**62)  # admission off: Redis itself refuses
    before = await redis.config_get("maxmemory")
    await redis.config_set("maxmemory", 1)
    try:
        async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo"}, headers=auth(api_key)) as resp:
            status, answer, retry_after = resp.status, await resp.json(), resp.headers.get("Retry-After")
    finally:
        await redis.config_set("maxmemory", before["maxmemory"])
    assert status == 503 and answer["error"]["code"] == "unavailable" and retry_after, answer
    assert "memory" in answer["error"]["message"]

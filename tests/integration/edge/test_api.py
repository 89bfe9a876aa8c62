"""The public jobs API against a real Redis and a real edge app."""

import asyncio

import pytest

from ezthrottle_server.common import apikeys, keys
from support.jobs import job_records

pytestmark = pytest.mark.asyncio


def auth(key):
    return {"Authorization": f"Bearer {key}"}


async def post_job(http, edge, key, payload, **kw):
    async with http.post(f"{edge.url}/api/v1/jobs", json=payload, headers=auth(key), **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_submit_answers_201_and_stores_the_job(http, edge, api_key, target, redis):
    status, body, _ = await post_job(http, edge, api_key, {"url": f"{target.url}/echo", "idempotent_key": "k1"})
    assert status == 201
    assert body["status"] == "queued" and body["idempotent_key"] == "k1"
    assert await redis.hget(keys.job(body["job_id"]), "customer") == "acme"


@pytest.mark.parametrize(
    ("raw", "ctype", "status", "code"),
    [
        (b"{nope", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"[1]", "application/json", 400, "invalid_request"),
        (b'{"url": "http://127.0.0.1:9/x"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"method": "GET"}', "application/json", 400, "missing_field"),
        (b'{"url": "file:///etc/passwd"}', "application/json", 400, "invalid_field"),
        (b'{"url": "http://127.0.0.1:9/x", "extra": 1}', "application/json", 400, "unknown_field"),
        (b'{"url": "http://127.0.0.1:9/x", "method": "TRACE"}', "application/json", 400, "invalid_field"),
        (b'{"url": "http://127.0.0.1:9/x", "retry_policy": {"max_retries": "3"}}', "application/json", 400, "invalid_field"),
    ],
)
async def test_bad_input_gets_a_json_4xx(http, edge, api_key, redis, raw, ctype, status, code):
    async with http.post(f"{edge.url}/api/v1/jobs", data=raw, headers={**auth(api_key), "Content-Type": ctype}) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert await job_records(redis) == []  # nothing half-written


async def test_oversized_body_is_413_and_nothing_is_written(http, start_edge, api_key, redis):
    edge = await start_edge("iad", max_body_bytes=1000)
    status, body, _ = await post_job(http, edge, api_key, {"url": "http://127.0.0.1:9/x", "body": "a" * 2000})
    assert status == 413 and body["error"]["code"] == "payload_too_large"

    # chunked, without a Content-Length
    async def chunks():
        yield b'{"url": "http://127.0.0.1:9/x", "body": "'
        yield b"a" * 5000
        yield b'"}'

    async with http.post(f"{edge.url}/api/v1/jobs", data=chunks(), headers={**auth(api_key), "Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await job_records(redis) == []


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer ", "Bearer ezt_live_nope"])
async def test_missing_or_bad_keys_get_401(http, edge, header):
    headers = {"Authorization": header} if header else {}
    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": "http://127.0.0.1:9/x"}, headers=headers) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["error"]["code"] == "unauthorized"


async def test_revoked_key_stops_working(http, start_edge, redis, target):
    edge = await start_edge("iad", api_key_cache_s=0.0)
    key, _ = await apikeys.create_key(redis, "acme")
    status, _, _ = await post_job(http, edge, key, {"url": f"{target.url}/echo"})
    assert status == 201
    assert await apikeys.revoke(redis, key)
    status, body, _ = await post_job(http, edge, key, {"url": f"{target.url}/echo", "body": "2"})
    assert status == 401 and "revoked" in body["error"]["message"]


async def test_another_customers_job_is_404(http, edge, api_key, other_api_key, target):
    _, body, _ = await post_job(http, edge, api_key, {"url": f"{target.url}/echo"})
    async with http.get(f"{edge.url}/api/v1/jobs/{body['job_id']}", headers=auth(other_api_key)) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with http.get(f"{edge.url}/api/v1/jobs/job_123_nothere", headers=auth(api_key)) as resp:
        assert resp.status == 404


async def test_hash_strategy_dedupes_identical_requests(http, edge, api_key, other_api_key, target):
    payload = {"url": f"{target.url}/echo", "method": "POST", "body": '{"amount": 1000}'}
    s1, first, _ = await post_job(http, edge, api_key, payload)
    s2, second, _ = await post_job(http, edge, api_key, payload)
    assert (s1, s2) == (201, 200)
    assert second == {"job_id": first["job_id"], "status": "duplicate", "idempotent_key": first["idempotent_key"]}
    # another customer's identical request is its own job
    s3, third, _ = await post_job(http, edge, other_api_key, payload)
    assert s3 == 201 and third["job_id"] != first["job_id"]
    # a different body is a different job
    s4, _, _ = await post_job(http, edge, api_key, {**payload, "body": '{"amount": 2000}'})
    assert s4 == 201


async def test_fifty_concurrent_submissions_with_one_key_create_one_job(http, edge, api_key, target, redis):
    payload = {"url": f"{target.url}/echo", "idempotent_key": "order-42"}
    results = await asyncio.gather(*(post_job(http, edge, api_key, payload) for _ in range(50)))
    statuses = sorted(s for s, _, _ in results)
    assert statuses.count(201) == 1 and statuses.count(200) == 49
    ids = {b["job_id"] for _, b, _ in results}
    assert len(ids) == 1
    assert [b["status"] for s, b, _ in results if s == 200] == ["duplicate"] * 49
    assert len(await job_records(redis)) == 1
    await target.wait_for(1, "/echo")
    await asyncio.sleep(0.2)
    assert len(target.matching("/echo")) == 1  # and it ran once


async def test_idempotency_keys_expire(http, start_edge, api_key, target):
    edge = await start_edge("iad", idempotency_ttl_s=1)
    payload = {"url": f"{target.url}/echo", "idempotent_key": "short-lived"}
    _, first, _ = await post_job(http, edge, api_key, payload)
    await asyncio.sleep(1.2)
    status, again, _ = await post_job(http, edge, api_key, payload)
    assert status == 201 and again["job_id"] != first["job_id"]


async def test_unknown_routes_and_methods_are_json(http, edge):
    async with http.get(f"{edge.url}/api/v1/nope") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with http.delete(f"{edge.url}/api/v1/jobs") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_health_and_readiness(http, edge):
    async with http.get(f"{edge.url}/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{edge.url}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["redis"] is True
    async with http.get(f"{edge.url}/metrics") as resp:
        assert resp.status == 200 and "ezt_jobs_submitted_total" in await resp.text()

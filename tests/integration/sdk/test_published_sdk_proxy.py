"""The published ``ezthrottle==1.3.0`` SDK, unchanged, against a real edge through ``/api/v1/proxy``.

It runs in its own virtualenv (a subprocess), with ``tracktags_url`` and
``ezthrottle_url`` both pointed at the edge, exactly as a user switching to
a self-hosted EZThrottle would configure it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.quotas import Tier
from support.jobs import auth, wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def drive(published: Any, edge: Any, api_key: str, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the published client's calls in its own process, without blocking the edge's loop."""
    data = {"api_key": api_key, "url": edge.url, "calls": [list(c) for c in calls]}
    return await asyncio.to_thread(published.run, {"mode": "client", "data": data})


async def test_submit_and_duplicate_through_the_proxy(published, edge, api_key, target, redis, http):
    job = {"url": f"{target.url}/echo", "method": "POST", "body": '{"amount": 1000}', "idempotent_key": "order-1"}
    first, again, hashed = await drive(
        published, edge, api_key, ("submit_job", job), ("submit_job", job), ("submit_job", {"url": f"{target.url}/echo?h=1"})
    )
    assert first["ok"]["status"] == "queued" and first["ok"]["idempotent_key"] == "order-1"
    job_id = first["ok"]["job_id"]
    assert again["ok"] == {"job_id": job_id, "status": "duplicate", "idempotent_key": "order-1"}
    assert hashed["ok"]["status"] == "queued"  # HASH strategy: the server made the key
    assert await redis.hget(keys.job(job_id), "customer") == "acme"

    done = await wait_final(http, edge.url, api_key, job_id)
    assert done["status"] == "success"
    assert [r.body for r in target.matching("/echo")] == [b'{"amount": 1000}']  # ran once


async def test_job_status_through_the_proxy_matches_the_direct_route(edge, api_key, target, http):
    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo"}, headers=auth(api_key)) as resp:
        job_id = (await resp.json())["job_id"]
    envelope = {"target_url": f"https://elsewhere.example/api/v1/jobs/{job_id}", "method": "GET", "headers": {}, "body": ""}
    async with http.post(f"{edge.url}/api/v1/proxy", json=envelope, headers=auth(api_key)) as resp:
        assert resp.status == 200
        wrapped = await resp.json()
    assert wrapped["status"] == "allowed"
    forwarded = wrapped["forwarded_response"]
    assert forwarded["status_code"] == 200 and forwarded["headers"]["Content-Type"].startswith("application/json")
    async with http.get(f"{edge.url}/api/v1/jobs/{job_id}", headers=auth(api_key)) as resp:
        direct = await resp.json()
    proxied = json.loads(forwarded["body"])
    assert proxied["job_id"] == direct["job_id"] == job_id and proxied["url"] == direct["url"]


async def test_webhook_secret_lifecycle_through_the_proxy(published, edge, api_key, redis):
    primary, secondary = "primary_secret_0123456789", "secondary_secret_0123456789"
    results = await drive(
        published,
        edge,
        api_key,
        ("get_webhook_secret", {}),
        ("create_webhook_secret", {"primary_secret": primary, "secondary_secret": secondary}),
        ("get_webhook_secret", {}),
        ("delete_webhook_secret", {}),
        ("get_webhook_secret", {}),
    )
    missing, created, shown, deleted, gone = results
    assert missing["error"]["type"] == "EZThrottleError" and "No webhook secrets configured" in missing["error"]["message"]
    assert created["ok"]["status"] == "ok"
    assert shown["ok"] == {
        "customer_id": "acme",
        "primary_secret": "pr****89",
        "secondary_secret": "se****89",
        "has_secondary": True,
    }
    assert deleted["ok"] == {"status": "ok", "message": "Webhook secrets deleted"}
    assert "No webhook secrets configured" in gone["error"]["message"]
    assert await redis.exists(keys.webhook_secrets("acme")) == 0


async def test_quota_429_is_the_published_sdks_rate_limited_error(published, start_edge, api_key, target):
    edge = await start_edge("iad", tiers={"free": Tier("free", 1, 1)})
    before_ms = int(time.time() * 1000)
    ok, refused = await drive(
        published, edge, api_key, ("submit_job", {"url": f"{target.url}/echo"}), ("submit_job", {"url": f"{target.url}/other"})
    )
    assert ok["ok"]["status"] == "queued"
    error = refused["error"]
    assert error["type"] == "EZThrottleError"
    assert error["message"].startswith("Rate limited: ") and "quota_exceeded" in error["message"]
    assert error["retry_at"] is not None and error["retry_at"] > before_ms + 1000  # from Retry-After, in ms


async def test_unknown_targets_and_malformed_envelopes(edge, api_key, http):
    async def post(envelope: Any) -> tuple[int, dict[str, Any]]:
        async with http.post(f"{edge.url}/api/v1/proxy", json=envelope, headers=auth(api_key)) as resp:
            return resp.status, await resp.json()

    status, body = await post({"target_url": "http://edge/api/v1/admin", "method": "GET"})
    assert status == 404 and body["error"]["field"] == "target_url"
    status, body = await post({"target_url": "http://edge/api/v1/jobs", "method": "PUT", "body": "{}"})
    assert status == 405 and body["error"]["field"] == "method"
    for envelope, field in [
        ({"method": "POST"}, "target_url"),
        ({"target_url": "/api/v1/jobs", "method": "POST"}, "target_url"),
        ({"target_url": "http://edge/api/v1/jobs"}, "method"),
        ({"target_url": "http://edge/api/v1/jobs", "method": "POST", "headers": {"X": 1}}, "headers"),
        ({"target_url": "http://edge/api/v1/jobs", "method": "POST", "body": {"url": "x"}}, "body"),
        ({"target_url": "http://edge/api/v1/jobs", "method": "POST", "extra": 1}, "extra"),
    ]:
        status, body = await post(envelope)
        assert status == 400 and body["error"]["field"] == field, (envelope, body)
    status, body = await post([1])
    assert status == 400 and body["error"]["code"] == "invalid_request"
    # The forwarded request's own validation answers inside the envelope.
    status, body = await post({"target_url": "http://edge/api/v1/jobs", "method": "POST", "body": '{"nope": 1}'})
    assert status == 200 and body["forwarded_response"]["status_code"] == 400
    async with http.post(f"{edge.url}/api/v1/proxy", json={"target_url": "http://e/api/v1/jobs", "method": "GET"}) as resp:
        assert resp.status == 401

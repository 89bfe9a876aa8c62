"""GET /api/v1/jobs/{id}/events: live server-sent events from any edge."""

import asyncio
import time

import pytest

from support.jobs import auth, submit, wait_final
from support.services import RunningApp, make_settings
from support.sse import events

pytestmark = pytest.mark.asyncio


async def collect(http, base_url, key, job_id, timeout_s=10.0):
    got = []
    async with asyncio.timeout(timeout_s):
        async with http.get(f"{base_url}/api/v1/jobs/{job_id}/events", headers=auth(key)) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            async for name, data in events(resp):
                got.append((name, data))
    return got


async def test_a_late_client_gets_the_state_first_and_the_stream_ends(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo"})
    await wait_final(http, edge.url, api_key, job["job_id"])
    got = await collect(http, edge.url, api_key, job["job_id"])
    assert [n for n, _ in got] == ["snapshot", "completed"]
    assert got[0][1]["status"] == "success" and got[1][1]["result"]["status_code"] == 200


async def test_live_events_from_any_edge_through_delivery(http, redis_url, start_edge, coordinator, api_key, target, receiver):
    from ezthrottle_server.delivery.app import create_app as delivery_app

    iad = await start_edge("iad")
    lax = await start_edge("lax")
    settings = make_settings("delivery", redis_url, node_id="delivery-events")
    delivery = await RunningApp(delivery_app(settings), settings).start()
    try:
        job = await submit(
            http,
            iad.url,
            api_key,
            {
                "url": f"{target.url}/status/503",
                "retry_at": int(time.time() * 1000) + 600,
                "retry_policy": {"max_retries": 1},
                "webhooks": [{"url": f"{receiver.url}/hook"}],
            },
        )
        got = await collect(http, lax.url, api_key, job["job_id"])  # another region's edge
    finally:
        await delivery.stop()
    names = [n for n, _ in got]
    assert names[0] == "snapshot" and got[0][1]["status"] == "scheduled"
    expected_events = ["queued", "dispatching", "attempt", "scheduled", "won", "failed", "quorum_met"]
    if not redis_url.startswith("redis+cluster://"):
        # On a cluster (make test-cluster) an event crosses the cluster bus and can come after
        # the read that settles the view and ends the stream: "delivered" may not be streamed.
        expected_events.append("delivered")
    for expected in expected_events:
        assert expected in names, (expected, names)
    assert names.index("queued") < names.index("dispatching") < names.index("attempt") < names.index("won") < names.index("failed")
    attempt = dict(got)["attempt"]
    assert attempt["region"] == "iad" and attempt["status_code"] == 503 and attempt["latency_ms"] >= 0
    failed = dict(got)["failed"]
    assert failed["status"] == "failed" and failed["error"] == "retries_exhausted"
    assert names[-1] in ("quorum_met", "delivered")


async def test_streams_are_scoped_to_the_customer(http, edge, api_key, other_api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo"})
    async with http.get(f"{edge.url}/api/v1/jobs/{job['job_id']}/events", headers=auth(other_api_key)) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with http.get(f"{edge.url}/api/v1/jobs/{job['job_id']}/events") as resp:
        assert resp.status == 401


async def test_keep_alives_while_waiting(http, start_edge, api_key, target, monkeypatch):
    from ezthrottle_server.edge import events as events_module

    real = events_module.stream_job_events

    async def quick(request, hub, load_view, **kw):
        return await real(request, hub, load_view, keepalive_s=0.1, max_stream_s=0.5)

    monkeypatch.setattr("ezthrottle_server.edge.api.stream_job_events", quick)
    edge = await start_edge("iad")
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "retry_at": int(time.time() * 1000) + 60_000})
    got = await collect(http, edge.url, api_key, job["job_id"], timeout_s=5)
    assert got[0][0] == "snapshot" and ("comment", "keep-alive") in got

"""Edges execute jobs against real loopback targets and record every attempt."""

import asyncio
import time

import pytest

from ezthrottle_server.edge.context import CTX
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio

FAST_RETRY = {"retry_backoff_base_s": 0.01, "retry_backoff_cap_s": 0.05}


async def test_get_job_runs_and_stores_result(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?x=1", "metadata": {"order": "7"}})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success"
    assert view["result"]["status_code"] == 200
    assert view["result"]["headers"]["content-type"].startswith("application/json")
    assert '"query": {"x": "1"}' in view["result"]["body"] or '"x":"1"' in view["result"]["body"]
    assert view["metadata"] == {"order": "7"}
    [attempt] = view["attempts"]
    assert attempt["region"] == "iad" and attempt["status_code"] == 200 and attempt["node"]
    assert attempt["latency_ms"] > 0 and attempt["error"] is None
    assert view["winner_region"] == "iad"
    assert view["created_at_ms"] <= view["started_at_ms"] <= view["finished_at_ms"]


async def test_method_headers_and_body_reach_the_target(http, edge, api_key, target):
    payload = {"url": f"{target.url}/echo", "method": "PUT", "headers": {"X-Trace": "abc"}, "body": '{"amount": 1000}'}
    job = await submit(http, edge.url, api_key, payload)
    await wait_final(http, edge.url, api_key, job["job_id"])
    [req] = target.matching("/echo")
    assert req.method == "PUT" and req.headers["X-Trace"] == "abc" and req.body == b'{"amount": 1000}'


async def test_non_retryable_status_fails_with_its_reason(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/404"})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "non_retryable_status"
    assert view["result"]["status_code"] == 404


async def test_retry_codes_retry_in_region_until_success(http, start_edge, coordinator, api_key, target):
    edge = await start_edge("iad", **FAST_RETRY)
    url = target.script("flaky", 503, 429, 200)
    job = await submit(http, edge.url, api_key, {"url": url})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success" and view["retries"] == 2
    assert [a["status_code"] for a in view["attempts"]] == [503, 429, 200]
    assert [a["decision"] for a in view["attempts"]] == ["retry", "retry", "success"]


async def test_retries_run_out(http, start_edge, coordinator, api_key, target):
    edge = await start_edge("iad", **FAST_RETRY)
    url = target.script("down", *([503] * 10))
    job = await submit(http, edge.url, api_key, {"url": url, "retry_policy": {"max_retries": 2}})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "retries_exhausted"
    assert len(view["attempts"]) == 3 and len(target.matching("/script/down")) == 3


async def test_connection_errors_reroute_to_another_region(http, start_edge, api_key):
    iad = await start_edge("iad")
    await start_edge("lax")
    await start_edge("ord")
    dead = "http://127.0.0.1:9/never"  # closed loopback port
    job = await submit(http, iad.url, api_key, {"url": dead, "retry_policy": {"max_reroutes": 2}})
    view = await wait_final(http, iad.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "reroutes_exhausted"
    assert view["reroutes"] == 2
    regions = [a["region"] for a in view["attempts"]]
    assert len(regions) == 3 and regions[0] == "iad" and regions[1] != "iad"
    assert all("Connect" in a["error"] or "connect" in a["error"] for a in view["attempts"])


async def test_response_bodies_are_capped_and_marked(http, start_edge, api_key, target):
    edge = await start_edge("iad", response_body_cap_bytes=100)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/big/5000"})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["result"]["truncated"] is True and len(view["result"]["body"]) == 100


async def test_redirects_are_followed(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/redirect?to=/echo&code=307", "method": "POST", "body": "b"})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success"
    assert [r.path for r in target.requests] == ["/redirect", "/echo"]
    assert target.matching("/echo")[0].method == "POST"  # 307 keeps the method and body


async def test_attempt_timeout(http, start_edge, api_key, target):
    edge = await start_edge("iad", attempt_timeout_s=0.2)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/2000", "retry_policy": {"max_retries": 0}})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "timeout"


async def test_retry_at_holds_the_job_until_then(http, edge, coordinator, api_key, target):
    due_ms = int(time.time() * 1000) + 800
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "retry_at": due_ms})
    [req] = await target.wait_for(1, "/echo", timeout_s=5)
    sent_ms = (req.at - time.monotonic()) * 1000 + time.time() * 1000
    assert sent_ms >= due_ms - 5
    assert sent_ms - due_ms < 500
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success"


async def test_a_dead_nodes_jobs_are_reclaimed_by_a_live_node(http, start_edge, api_key, target):
    first = await start_edge("iad", visibility_timeout_ms=60_000)
    job = await submit(http, first.url, api_key, {"url": f"{target.url}/delay/1500"})
    await target.wait_for(1, "/delay/1500")
    # "kill" the node: its in-flight attempt is cancelled, the entry stays pending
    await first.app[CTX].worker.stop(grace_s=0)
    second = await start_edge("iad", visibility_timeout_ms=300)
    view = await wait_final(http, second.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "success"
    assert view["attempts"][-1]["node"] == second.settings.node_id
    assert len(target.matching("/delay/1500")) == 2


async def test_a_live_node_keeps_a_long_attempt(http, start_edge, api_key, target):
    # The attempt lasts 2.5 visibility timeouts; the holder renews every third of one. (At 300 ms, a loaded CI
    # machine once held the shared loop long enough, starting the second edge, for a renewal to come too late.)
    holder = await start_edge("iad", visibility_timeout_ms=1000)
    job = await submit(http, holder.url, api_key, {"url": f"{target.url}/delay/2500"})
    await target.wait_for(1, "/delay/2500")
    await start_edge("iad", visibility_timeout_ms=1000)  # would steal an idle entry
    view = await wait_final(http, holder.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "success"
    await asyncio.sleep(0.3)
    assert len(target.matching("/delay/2500")) == 1  # nobody stole it
    assert [a["node"] for a in view["attempts"]] == [holder.settings.node_id]


async def test_an_unusable_redirect_location_fails_the_job_cleanly(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/redirect?to=http://[::1&code=302"})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "invalid_redirect"
    assert "Location" in view["attempts"][0]["error"]

"""Retry-After pauses a domain everywhere; retries and reroutes are counted and recorded."""

import itertools

import pytest

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import submit_many
from support.jobs import wait_final

pytestmark = pytest.mark.asyncio

FAST_RETRY = {"retry_backoff_base_s": 0.01, "retry_backoff_cap_s": 0.05}


async def test_retry_after_pauses_the_domain_on_every_node(http, start_edge, coordinator, api_key, target, other_target):
    iad = await start_edge("iad", **FAST_RETRY)
    lax = await start_edge("lax", **FAST_RETRY)
    url = target.script("busy", (429, {"Retry-After": "2"}), 200)
    [paused_job] = await submit_many(http, [iad.url], api_key, [{"url": url}])
    [first] = await target.wait_for(1, "/script/busy", timeout_s=5)
    # while the domain is paused: the same domain from another region waits...
    [same] = await submit_many(http, [lax.url], api_key, [{"url": f"{target.url}/echo"}])
    # ...and another domain does not
    [other] = await submit_many(http, [lax.url], api_key, [{"url": f"{other_target.url}/echo"}])
    await other_target.wait_for(1, "/echo", timeout_s=2)
    assert other_target.requests[0].at - first.at < 1.0

    [echo] = await target.wait_for(1, "/echo", timeout_s=5)
    assert echo.at - first.at >= 1.95  # not before Retry-After
    view = await wait_final(http, iad.url, api_key, paused_job, timeout_s=5)
    assert view["status"] == "success" and view["retries"] == 1
    retried = target.matching("/script/busy")[1]
    assert retried.at - first.at >= 1.95
    for job in (same, other):
        assert (await wait_final(http, lax.url, api_key, job))["status"] == "success"


async def test_retries_and_reroutes_are_counted_and_recorded(http, start_edge, coordinator, api_key, target):
    iad = await start_edge("iad", **FAST_RETRY)
    await start_edge("lax", **FAST_RETRY)
    url = target.script("flaky", 503, 502, 200)
    [job] = await submit_many(http, [iad.url], api_key, [{"url": url, "regions": ["iad"]}])
    view = await wait_final(http, iad.url, api_key, job, timeout_s=10)
    assert view["status"] == "success"
    assert (view["retries"], view["reroutes"]) == (1, 1)
    assert [a["status_code"] for a in view["attempts"]] == [503, 502, 200]
    assert [a["decision"] for a in view["attempts"]] == ["retry", "reroute", "success"]
    assert [a["region"] for a in view["attempts"]] == ["iad", "iad", "lax"]
    times = [r.at for r in target.matching("/script/flaky")]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.45  # retries are paced like any send


async def test_budgets_run_out_with_their_reason(http, start_edge, coordinator, api_key, target):
    iad = await start_edge("iad", **FAST_RETRY)
    await start_edge("lax", **FAST_RETRY)
    retry_url = target.script("down", *([503] * 5))
    reroute_url = target.script("broken", *([500] * 5))
    jobs = await submit_many(
        http,
        [iad.url],
        api_key,
        [
            {"url": retry_url, "retry_policy": {"max_retries": 1}},
            {"url": reroute_url, "retry_policy": {"max_reroutes": 1}, "regions": ["iad"]},
            {"url": f"{target.url}/status/404"},
        ],
    )
    views = [await wait_final(http, iad.url, api_key, j, timeout_s=10) for j in jobs]
    assert [v["error"] for v in views] == ["retries_exhausted", "reroutes_exhausted", "non_retryable_status"]
    assert [len(v["attempts"]) for v in views] == [2, 2, 1]


async def test_immediate_retries_are_never_lost(http, redis, start_edge, api_key, target):
    # no backoff: each retry is back in the stream before its attempt's lease is released
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    edge = await start_edge("iad", retry_backoff_base_s=0.0, retry_backoff_cap_s=0.0)
    urls = [target.script(f"again{i}", 503, 503, 503, 200) for i in range(12)]
    jobs = await submit_many(http, [edge.url], api_key, [{"url": u} for u in urls])
    for job in jobs:
        view = await wait_final(http, edge.url, api_key, job, timeout_s=10)
        assert view["status"] == "success" and view["retries"] == 3

"""No head-of-line blocking between domains; fairness between customers of one domain."""

import time

import pytest

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import submit_many, wait_until
from support.jobs import wait_final

pytestmark = pytest.mark.asyncio


async def waiting(edge, target_url: str) -> int:
    limiter = edge.app[CTX].worker.limiter
    return (await limiter.describe(domain_of(target_url), regions=["iad"])).waiting["iad"]


async def _at_least(coro, n: int) -> bool:
    return await coro >= n


async def test_a_paused_domain_with_hundreds_waiting_does_not_delay_another(http, start_edge, api_key, target, other_target):
    edge = await start_edge("iad")
    # the first answer pauses domain A for a minute; 300 more jobs queue behind it
    url = target.script("closed", (429, {"Retry-After": "60"}))
    await submit_many(http, [edge.url], api_key, [{"url": url}])
    await target.wait_for(1, timeout_s=5)
    await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?n={i}"} for i in range(300)])
    await wait_until(lambda: _at_least(waiting(edge, target.url), 300), timeout_s=10)

    submitted = time.monotonic()
    [job] = await submit_many(http, [edge.url], api_key, [{"url": f"{other_target.url}/echo"}])
    [req] = await other_target.wait_for(1, "/echo", timeout_s=5)
    assert req.at - submitted < 1.0  # in practice a few ms: nothing of A's stood in the way
    assert (await wait_final(http, edge.url, api_key, job))["status"] == "success"
    assert len(target.requests) == 1  # and A stayed paused


async def test_a_slow_domain_at_its_concurrency_cap_does_not_delay_another(http, redis, start_edge, api_key, target, other_target):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 50}}\n"))
    edge = await start_edge("iad", executor_concurrency=8)
    await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/delay/2000?n={i}"} for i in range(200)])
    await target.wait_for(2, timeout_s=5)  # two in flight (the per-node cap), the rest wait
    submitted = time.monotonic()
    [job] = await submit_many(http, [edge.url], api_key, [{"url": f"{other_target.url}/echo"}])
    [req] = await other_target.wait_for(1, "/echo", timeout_s=5)
    assert req.at - submitted < 1.0
    assert (await wait_final(http, edge.url, api_key, job))["status"] == "success"
    assert len(target.requests) == 2
    assert edge.app[CTX].worker.inflight <= 3  # a waiting job holds no send slot


async def test_one_customers_flood_does_not_starve_another(http, start_edge, api_key, other_api_key, target):
    edge = await start_edge("iad")
    await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?c=flood&n={i}"} for i in range(40)])
    await target.wait_for(2, "/echo", timeout_s=5)
    sent_before = len(target.requests)
    [job] = await submit_many(http, [edge.url], other_api_key, [{"url": f"{target.url}/echo?c=patient"}])
    view = await wait_final(http, edge.url, other_api_key, job, timeout_s=5)
    assert view["status"] == "success"
    order = [r.query["c"] for r in target.matching("/echo")]
    assert order.index("patient") <= sent_before + 1  # next, or the one after: not behind 38 others
    limiter = edge.app[CTX].worker.limiter
    assert (await limiter.describe(domain_of(target.url), regions=["iad"])).waiting["iad"] >= 30  # A still waits


async def test_fairness_holds_across_regions(http, start_edge, api_key, other_api_key, target):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    flood = [{"url": f"{target.url}/echo?c=flood&n={i}", "regions": ["iad"], "region_policy": "strict"} for i in range(30)]
    await submit_many(http, [iad.url], api_key, flood)
    await target.wait_for(2, "/echo", timeout_s=5)
    sent_before = len(target.requests)
    patient = {"url": f"{target.url}/echo?c=patient", "regions": ["lax"], "region_policy": "strict"}
    [job] = await submit_many(http, [lax.url], other_api_key, [patient])
    view = await wait_final(http, lax.url, other_api_key, job, timeout_s=5)
    assert view["attempts"][0]["region"] == "lax"
    order = [r.query["c"] for r in target.matching("/echo")]
    assert order.index("patient") <= sent_before + 1  # iad's backlog left it the next token

"""One limit per domain, shared by every node and region, tuned by the target's headers."""

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import max_in_window, submit_many
from support.jobs import wait_final

pytestmark = pytest.mark.asyncio


def limiter(edge):
    return edge.app[CTX].worker.limiter


async def test_one_limit_for_a_domain_across_nodes_and_regions(http, start_edge, api_key, target):
    edges = [await start_edge("iad"), await start_edge("iad"), await start_edge("lax")]
    ids = await submit_many(http, [e.url for e in edges], api_key, [{"url": f"{target.url}/echo?n={i}"} for i in range(7)])
    await target.wait_for(7, "/echo", timeout_s=10)
    times = [r.at for r in target.matching("/echo")]
    assert max_in_window(times) <= 2  # 2 requests/s by default, whoever sends
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:])]
    assert min(gaps) >= 0.45
    senders = set()
    for job_id in ids:
        view = await wait_final(http, edges[0].url, api_key, job_id)
        senders.add(view["attempts"][-1]["node"])
    assert len(senders) >= 2  # the limit held although several nodes sent


async def test_rate_headers_tune_the_domain_for_every_node(http, start_edge, api_key, target):
    edges = [await start_edge("iad"), await start_edge("lax")]
    url = f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:20&h=X-EZTHROTTLE-MAX-CONCURRENT:4"
    await submit_many(http, [edges[0].url], api_key, [{"url": url}])
    await target.wait_for(1, timeout_s=5)
    domain = domain_of(target.url)
    deadline = time.monotonic() + 2
    while (view := await limiter(edges[1]).describe(domain)).rps_source != "header" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (view.rps, view.rps_source, view.max_concurrent, view.max_concurrent_source) == (20, "header", 4, "header")
    started = time.monotonic()
    await submit_many(http, [e.url for e in edges], api_key, [{"url": url + f"&n={i}"} for i in range(20)])
    await target.wait_for(21, timeout_s=8)
    times = [r.at for r in target.requests[1:]]
    assert time.monotonic() - started < 5  # 20 jobs at 2/s would take 10 s
    assert max_in_window(times) <= 21


async def test_aqueduct_headers_win_and_garbage_is_counted(http, edge, api_key, target):
    before = REGISTRY.get_sample_value("ezt_pacing_header_invalid_total", {"header": "x-ezthrottle-rps"}) or 0
    url = f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:1&h=X-Aqueduct-Rps:7.5&h=X-Aqueduct-Max-Concurrent:3"
    [job] = await submit_many(http, [edge.url], api_key, [{"url": url}])
    await wait_final(http, edge.url, api_key, job)
    view = await limiter(edge).describe(domain_of(target.url))
    assert (view.rps, view.max_concurrent, view.rps_source) == (7.5, 3, "header")
    [job] = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:lots"}])
    await wait_final(http, edge.url, api_key, job)
    after = REGISTRY.get_sample_value("ezt_pacing_header_invalid_total", {"header": "x-ezthrottle-rps"})
    assert after == before + 1
    assert (await limiter(edge).describe(domain_of(target.url))).rps == 7.5  # garbage changed nothing


async def test_a_per_customer_domain_gives_each_customer_its_own_limit(http, redis, start_edge, api_key, other_api_key, target):
    domain = domain_of(target.url)
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{per_customer: true}}\n"))
    edge = await start_edge("iad")
    await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?c=acme&n={i}"} for i in range(4)])
    await submit_many(http, [edge.url], other_api_key, [{"url": f"{target.url}/echo?c=globex&n={i}"} for i in range(4)])
    await target.wait_for(8, "/echo", timeout_s=8)
    by_customer: dict[str, list[float]] = {}
    for r in target.matching("/echo"):
        by_customer.setdefault(r.query["c"], []).append(r.at)
    for times in by_customer.values():
        assert max_in_window(times) <= 2  # each customer keeps 2/s...
    together = sorted(t for times in by_customer.values() for t in times)
    assert max_in_window(together) >= 3  # ...so together they go faster than one shared 2/s
    assert together[-1] - together[0] < 2.5  # 8 jobs at a shared 2/s would take 3.5 s
    acme = await limiter(edge).describe(domain, "acme", ["iad"])
    assert acme.per_customer and acme.scope.who == "acme" and acme.rps == 2

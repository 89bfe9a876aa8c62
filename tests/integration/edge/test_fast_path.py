"""The fast path: a job accepted while its domain is idle goes from its acceptance to its send at once.

The accepting edge leases the job from its pacing scope (``take.lua``) before
writing it, writes it without a stream entry, and sends it: no stream read,
no admission, no wait for ``start_attempt.lua``. The lease alone holds the
job, as a granted job is held, so a node that dies in between loses nothing.
"""

import asyncio

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.metrics import ACCEPT_TO_SEND
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import SHARED, Scope
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


async def raise_limits(redis, url: str) -> None:
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(url)}: {{rps: 50, max_concurrent: 8}}\n"))


async def warm(http, edge, api_key, target) -> None:
    """A first job: the edge learns the domain's pacing mode (the fast path needs it known)."""
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?warm=1"})
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    await asyncio.sleep(0.05)  # the next token (50/s)


def lost(target):
    return [r for r in target.matching("/echo") if r.query.get("n") == "lost"]


def last_entry(info: dict) -> str:
    return info["last-generated-id"]


async def test_an_idle_domains_job_is_sent_at_once_without_a_stream_entry(http, redis, edge, api_key, target):
    await raise_limits(redis, target.url)
    await warm(http, edge, api_key, target)
    before = ACCEPT_TO_SEND.labels("iad")._sum.get(), sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=1", "idempotent_key": "fast-1"})
    stream = keys.region_stream(keys.job_partition(job["job_id"]), "iad")
    written_before = last_entry(await redis.xinfo_stream(stream))

    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success" and len(view["attempts"]) == 1
    assert len(target.matching("/echo")) == 2
    assert last_entry(await redis.xinfo_stream(stream)) == written_before  # no entry was ever written for it
    count = sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets)
    assert count == before[1] + 1  # measured from its acceptance to its send
    async with asyncio.timeout(5):  # its lease is released, its send slot free
        while await redis.zcard(keys.pacing_running(domain_of(target.url), SHARED, "iad")) or edge.app[CTX].worker.inflight:
            await asyncio.sleep(0.02)


async def test_a_taken_job_whose_node_never_sends_it_is_recovered_when_its_lease_expires(http, redis, start_edge, api_key, target):
    edge = await start_edge("iad", visibility_timeout_ms=1500)
    await raise_limits(redis, target.url)
    await warm(http, edge, api_key, target)
    worker = edge.app[CTX].worker
    # An idle scope leaves the ready set (nothing waits or runs): only the take's own index brings it back.
    await redis.zrem(keys.pacing_ready("iad"), Scope(domain_of(target.url)).member)
    taken = []
    send_taken = worker.send_taken

    def dies_before_sending(job_id, t, created, first=None):
        taken.append(job_id)
        send_taken(job_id, t, None)  # as a node that died: nothing sent, the lease left to expire

    worker.send_taken = dies_before_sending
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=lost"})
    worker.send_taken = send_taken
    assert taken == [job["job_id"]]
    await asyncio.sleep(0.5)
    assert not lost(target)  # held by its lease alone

    view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "success"  # the lease expired; the next grant put the job back and sent it
    await asyncio.sleep(0.3)
    assert len(lost(target)) == 1


async def test_a_duplicate_gives_its_lease_and_token_back(http, redis, edge, api_key, target):
    # 1 request/s: a token spent on the duplicate would hold the domain for a second
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 1, max_concurrent: 8}}\n"))
    await warm(http, edge, api_key, target)
    payload = {"url": f"{target.url}/echo?n=dup", "idempotent_key": "dup-1"}
    await asyncio.sleep(1.1)
    first = await submit(http, edge.url, api_key, payload)
    await wait_final(http, edge.url, api_key, first["job_id"])
    await asyncio.sleep(1.1)  # the domain may send again: the duplicate is taken, then given back
    limit = keys.pacing_limit(domain_of(target.url), SHARED)
    again = await submit(http, edge.url, api_key, payload)
    assert again["status"] == "duplicate" and again["job_id"] == first["job_id"]
    async with asyncio.timeout(5):
        while await redis.zcard(keys.pacing_running(domain_of(target.url), SHARED, "iad")) or edge.app[CTX].worker.inflight:
            await asyncio.sleep(0.02)
    redis_ms = (lambda t: t[0] * 1000 + t[1] / 1000)(await redis.time())
    assert float(await redis.hget(limit, "tat")) <= redis_ms + 5  # the domain may send now: nothing was spent
    assert len([r for r in target.matching("/echo") if r.query.get("n") == "dup"]) == 1


async def test_jobs_trickling_in_faster_than_the_rate_go_at_once_or_wait_and_the_limit_holds(http, redis, start_edge, api_key, target):
    """Two edges of a region, jobs arriving at 8/s for a domain allowed 4/s: the
    ones that find the domain idle go at once, the others wait their turn, and
    the target never sees more than 4 in a second whoever sent them."""
    from integration.pacing.pacing_helpers import max_in_window

    edges = [await start_edge("iad"), await start_edge("iad")]
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 4, max_concurrent: 8}}\n"))
    for e in edges:
        await warm(http, e, api_key, target)
    await asyncio.sleep(1.0)
    taken_before = sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets)
    ids = []
    for i in range(24):
        ids.append((await submit(http, edges[i % 2].url, api_key, {"url": f"{target.url}/echo?n=t{i}"}))["job_id"])
        await asyncio.sleep(0.125)
    for job_id in ids:
        assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=15))["status"] == "success"
    times = [r.at for r in target.matching("/echo") if r.query.get("n", "").startswith("t")]
    assert len(times) == 24
    assert max_in_window(times) <= 4
    taken = sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets) - taken_before
    assert 1 <= taken < 24  # both ways were taken

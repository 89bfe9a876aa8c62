"""The services on a real 3-master Redis Cluster, ``EZT_PARTITIONS=4``: jobs in
every partition (so on every master) are submitted, executed, retried, raced,
paced, delivered and streamed exactly as on one server."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from redis.asyncio.cluster import RedisCluster

from cluster.helpers import PARTITIONS, collect_events, keys_per_partition
from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.coordinator.sampler import QueueSampler
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.delivery.helpers import all_in, wait_webhooks
from integration.pacing.pacing_helpers import max_in_window
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def unpaced(redis, target):
    """Most tests here are about Redis, not pacing: lift the target's limit (2 req/s by default)."""
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 200, max_concurrent: 50}}\n"))


def masters_of_partitions(redis: RedisCluster) -> dict[int, str]:
    return {p: redis.nodes_manager.get_node_from_slot(redis.keyslot(keys.partition_tag(p))).name for p in range(PARTITIONS)}


async def test_the_cluster_has_three_masters_and_partitions_on_each(redis):
    assert isinstance(redis, RedisCluster)
    await redis.ping()
    assert len(redis.get_primaries()) == 3
    assert len(set(masters_of_partitions(redis).values())) == 3


async def test_submit_execute_and_retry_in_every_partition(http, redis, start_edge, coordinator, api_key, target, unpaced):
    edge = await start_edge("iad")
    by_partition = keys_per_partition("acme", 2, "retry")
    jobs: dict[str, int] = {}
    for p, idem_keys in by_partition.items():
        for k in idem_keys:
            url = target.script(k, 429, 503)  # two retries (the delayed set, released by the coordinator), then 200
            job = await submit(http, edge.url, api_key, {"url": url, "idempotent_key": k, "retry_policy": {"max_retries": 3}})
            assert keys.job_partition(job["job_id"]) == p
            jobs[job["job_id"]] = p
    delayed = {"url": f"{target.url}/echo", "retry_at": int(time.time() * 1000) + 300}
    jobs[(await submit(http, edge.url, api_key, delayed))["job_id"]] = -1
    again = await submit(http, edge.url, api_key, {"url": url, "idempotent_key": k, "retry_policy": {"max_retries": 3}})
    assert again["status"] == "duplicate"
    for job_id in jobs:
        view = await wait_final(http, edge.url, api_key, job_id, timeout_s=15)
        assert view["status"] == "success", view
    views = [await wait_final(http, edge.url, api_key, j) for j, p in jobs.items() if p >= 0]
    assert all([a["status_code"] for a in v["attempts"]] == [429, 503, 200] for v in views)
    assert {p for p in jobs.values() if p >= 0} == set(range(PARTITIONS))
    # The coordinator's gauges read every partition's streams and sets (pipelines split per master).
    sample = await QueueSampler(coordinator.settings, redis, lease=None).sample()  # type: ignore[arg-type]
    assert dict(sample["ezt_queue_depth"])[("iad", "stream")] == 0 and sample["ezt_delayed_jobs"] == [((), 0)]


async def test_a_race_in_three_regions_has_one_winner_in_every_partition(http, start_edge, api_key, target, unpaced):
    edges = [await start_edge(r) for r in ("iad", "lax", "ord")]
    ids = []
    for p, (k,) in keys_per_partition("acme", 1, "race").items():
        payload = {"url": f"{target.url}/echo?p={p}", "idempotent_key": k, "regions": ["iad", "lax", "ord"]}
        ids.append((await submit(http, edges[p % 3].url, api_key, payload))["job_id"])
    for job_id in ids:
        view = await wait_final(http, edges[0].url, api_key, job_id)
        assert view["status"] == "success" and view["execution_mode"] == "race"
        winners = [a for a in view["attempts"] if a["decision"] == "success" and not a.get("lost")]
        assert len(winners) == 1 and view["winner_region"] == winners[0]["region"]

    async def all_recorded() -> bool:  # a region that sent before the claim records its result as lost
        views = [await wait_final(http, edges[0].url, api_key, j) for j in ids]
        return sum(len(v["attempts"]) for v in views) == len(target.matching("/echo"))

    deadline = time.monotonic() + 5
    while not await all_recorded():
        assert time.monotonic() < deadline, "the losers' results were not recorded"
        await asyncio.sleep(0.05)
    for job_id in ids:
        view = await wait_final(http, edges[0].url, api_key, job_id)
        assert sum(1 for a in view["attempts"] if not a.get("lost")) == 1


async def test_webhooks_reach_their_quorum_and_every_event_streams_from_another_edge(
    http, start_edge, coordinator, delivery, api_key, target, receivers, unpaced
):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    hooks = [await receivers(), await receivers()]
    ids = []
    for (k,) in keys_per_partition("acme", 1, "hooks").values():
        payload = {
            "url": f"{target.url}/echo",
            "idempotent_key": k,
            "regions": ["iad"],
            "retry_at": int(time.time() * 1000) + 500,  # time to subscribe before anything happens
            "webhooks": [{"url": f"{h.url}/hook"} for h in hooks],
            "webhook_quorum": 2,
        }
        ids.append((await submit(http, iad.url, api_key, payload))["job_id"])
    # One SSE stream per job, all on lax's edge (its one pub/sub connection, on one cluster
    # node), while iad runs the jobs: the events are published on the masters of 4 partitions.
    streams = await asyncio.gather(*(collect_events(http, lax.url, api_key, j) for j in ids))
    for job_id, got in zip(ids, streams):
        names = [n for n, _ in got]
        # "delivered" may not stream: a stream ends once its view is settled, and on a cluster an
        # event (cluster bus) can come after a read that already shows it; quorum_met is always said.
        for expected in ("snapshot", "queued", "dispatching", "attempt", "won", "completed", "quorum_met"):
            assert expected in names, (job_id, expected, names)
        view = await wait_webhooks(http, iad.url, api_key, job_id, all_in("delivered"))
        assert view["webhooks"]["quorum_met"] is True
    for h in hooks:
        assert sorted(r.json()["job_id"] for r in h.requests) == sorted(ids)


async def test_one_domain_limit_holds_across_regions_and_partitions(http, start_edge, redis, api_key, target):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 10, max_concurrent: 4}}\n"))
    edges = [await start_edge("iad"), await start_edge("lax"), await start_edge("ord")]
    n = 16
    chosen = [k for ks in keys_per_partition("acme", n // PARTITIONS, "paced").values() for k in ks]
    for i, k in enumerate(chosen):
        await submit(
            http,
            edges[i % 3].url,
            api_key,
            {"url": f"{target.url}/echo?i={i}", "idempotent_key": k, "regions": [("iad", "lax", "ord")[i % 3]]},
        )
    await target.wait_for(n, "/echo", timeout_s=15)
    times = [r.at for r in target.matching("/echo")]
    assert max_in_window(times) <= 10  # one limit for the domain, whichever region and partition
    assert max(times) - min(times) >= (n - 1) / 10 * 0.9
    views = [edge.app[CTX].worker.limiter for edge in edges]
    assert (await views[2].describe(domain_of(target.url))).rps == 10


async def test_jobs_lost_between_two_masters_are_found_on_every_master_and_repaired(
    http, redis, redis_url, start_edge, api_key, target, unpaced
):
    """The failover case the repair exists for: the stream entry acknowledged on the
    partition's master, the parking lost with the domain's. SCAN must reach every master."""
    from ezthrottle_server.common.redisconn import Scripts
    from ezthrottle_server.coordinator.repair import Repairer
    from support.services import make_settings

    class Leader:
        is_leader = True

    iad = await start_edge("iad")
    lost: dict[str, int] = {}
    for p, idem_keys in keys_per_partition("acme", 1, "lost").items():
        payload = {"url": f"{target.url}/echo?p={p}", "idempotent_key": idem_keys[0], "regions": ["lax"], "region_policy": "strict"}
        job_id = (await submit(http, iad.url, api_key, payload))["job_id"]
        stream = keys.region_stream(p, "lax")
        ((entry, _fields),) = await redis.xrange(stream, "-", "+")
        await redis.xdel(stream, entry)
        lost[job_id] = p
    assert set(lost.values()) == set(range(PARTITIONS))

    repairer = Repairer(make_settings("coordinator", redis_url, repair_after_s=0.0), redis, Scripts(redis), Leader())
    assert await repairer.sweep() == 0  # suspected on first sight
    assert await repairer.sweep() == PARTITIONS
    lax = await start_edge("lax")
    for job_id in lost:
        assert (await wait_final(http, lax.url, api_key, job_id, timeout_s=15))["status"] == "success"
        assert await redis.hget(keys.job(job_id), "repairs") == "1"
    assert len(target.matching("/echo")) == PARTITIONS


async def test_jobs_are_listed_and_searched_across_every_partition(http, redis, start_edge, coordinator, api_key, target, unpaced):
    """GET /api/v1/jobs reads each partition's index on its own slot and merges them (the slot audit
    checks no command spans two); submit.lua and spawn_child.lua write the index in the job's slot."""
    edge = await start_edge("iad")
    ids: dict[str, str] = {}  # job id -> its idempotent key (also its metadata k)
    for idem_keys in keys_per_partition("acme", 3, "list").values():
        for k in idem_keys:
            job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?{k}", "idempotent_key": k, "metadata": {"k": k}})
            ids[job["job_id"]] = k
    root = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?root", "on_success": {"url": f"{target.url}/echo?child"}})
    for job_id in [*ids, root["job_id"]]:
        await wait_final(http, edge.url, api_key, job_id, timeout_s=15)

    async def pages(query: str) -> list[dict]:
        out: list[dict] = []
        cursor = ""
        while True:
            async with http.get(f"{edge.url}/api/v1/jobs?{query}{cursor}", headers={"Authorization": f"Bearer {api_key}"}) as resp:
                page = await resp.json()
                assert resp.status == 200, page
            out.extend(page["jobs"])
            if page["next_cursor"] is None:
                return out
            cursor = f"&cursor={page['next_cursor']}"

    deadline = time.monotonic() + 15
    while len(family := await pages(f"root_job_id={root['job_id']}")) < 2:
        assert time.monotonic() < deadline, family
        await asyncio.sleep(0.05)
    listed = await pages("limit=2")
    positions = [(j["created_at_ms"], j["job_id"]) for j in listed]
    assert positions == sorted(positions, reverse=True)
    assert set(ids) <= {j["job_id"] for j in listed} and len(listed) == len(ids) + 2
    assert {keys.job_partition(j) for j in ids} == set(range(PARTITIONS))
    some = next(iter(ids))
    assert [j["job_id"] for j in await pages(f"metadata.k={ids[some]}")] == [some]
    assert [j["job_id"] for j in await pages(f"status=success&created_before={int(time.time() * 1000)}")] == [j["job_id"] for j in listed]
    assert some in {j["job_id"] for j in await pages(f"domain={domain_of(target.url)}")}
    async with http.get(f"{edge.url}/api/v1/domains/{domain_of(target.url)}", headers={"Authorization": f"Bearer {api_key}"}) as resp:
        view = await resp.json()
    assert resp.status == 200 and view["jobs"] == {"queued": 0, "in_flight": 0, "complete": True}, view


async def test_jobs_are_cancelled_and_expire_in_every_partition(http, redis, start_edge, coordinator, api_key, target, unpaced):
    """cancel.lua (a tree of jobs, their delayed entries and timers), start_attempt.lua's and the deadline
    timer's expiry each stay in the job's slot (the slot audit checks it), in every partition."""
    edge = await start_edge("iad")
    auth = {"Authorization": f"Bearer {api_key}"}
    later = int(time.time() * 1000) + 60_000
    waiting, expiring = [], []
    for one, two, three in keys_per_partition("acme", 3, "cancel").values():
        for k in (one, two):
            job = await submit(
                http, edge.url, api_key, {"url": f"{target.url}/echo?{k}", "idempotent_key": k, "retry_at": later, "metadata": {"w": "1"}}
            )
            waiting.append(job["job_id"])
        due = int(time.time() * 1000) + 300
        job = await submit(
            http,
            edge.url,
            api_key,
            {"url": f"{target.url}/echo?{three}", "idempotent_key": three, "retry_at": due, "start_before_ms": due + 1},
        )
        expiring.append(job["job_id"])
    async with http.delete(f"{edge.url}/api/v1/jobs/{waiting[0]}", headers=auth) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    async with http.post(f"{edge.url}/api/v1/jobs/cancel", json={"job_ids": waiting[1::2]}, headers=auth) as resp:
        assert (await resp.json())["counts"]["cancelled"] == PARTITIONS
    async with http.post(f"{edge.url}/api/v1/jobs/cancel", json={"filter": {"metadata.w": "1"}}, headers=auth) as resp:
        body = await resp.json()
        assert set(body["jobs"]) == set(waiting[2::2]), body  # the rest of the waiting ones
    root = await submit(
        http, edge.url, api_key, {"url": f"{target.url}/status/400", "on_failure": {"url": f"{target.url}/echo?child", "retry_at": later}}
    )
    deadline = time.monotonic() + 15
    while True:
        async with http.get(f"{edge.url}/api/v1/jobs/{root['job_id']}", headers=auth) as resp:
            if (await resp.json()).get("workflow", {}).get("children"):
                break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with http.delete(f"{edge.url}/api/v1/jobs/{root['job_id']}", headers=auth) as resp:
        assert (await resp.json())["children_cancelled"] == 1
    for job_id in waiting:
        assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=5))["status"] == "cancelled"
    for job_id in expiring:
        assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=15))["status"] == "expired"
    assert {keys.job_partition(j) for j in waiting} == set(range(PARTITIONS))
    assert target.matching("/echo") == []


async def test_a_bulk_cancel_runs_in_the_background_and_is_taken_over_on_a_cluster(http, redis, start_edge, api_key, monkeypatch):
    """common/bulk.py's keys (the action, its lease, the customer's running set, the orphans) are each used alone, and its
    steps list and cancel in every partition: the slot audit checks it, for an action run by one edge and finished by another."""
    from ezthrottle_server.common import bulk_cancel
    from ezthrottle_server.edge import cancel_api

    monkeypatch.setattr(cancel_api, "INLINE_MAX", 2)  # more: in the background
    monkeypatch.setattr(bulk_cancel, "PAGE", 5)  # several pages, so the second edge has some left
    first = await start_edge("iad", bulk_lease_s=0.5)
    second = await start_edge("iad", bulk_lease_s=0.5)
    later = int(time.time() * 1000) + 60_000
    ids = []
    for keys_of_partition in keys_per_partition("acme", 4, "bulk").values():
        for k in keys_of_partition:
            job = await submit(http, first.url, api_key, {"url": f"https://api.example/{k}", "idempotent_key": k, "retry_at": later})
            ids.append(job["job_id"])
    auth = {"Authorization": f"Bearer {api_key}"}
    async with http.post(f"{first.url}/api/v1/jobs/cancel", json={"filter": {"domain": "api.example"}}, headers=auth) as resp:
        action = await resp.json()
        assert resp.status == 202 and action["matched"] == len(ids), action
    await first.stop()  # mid-way or done: the second edge finishes what is left
    deadline = time.monotonic() + 30
    while True:
        async with http.get(f"{second.url}/api/v1/jobs/cancel/{action['action_id']}", headers=auth) as resp:
            progress = await resp.json()
        if progress["state"] == "done":
            break
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)
    assert (progress["matched"], progress["cancelled"]) == (len(ids), len(ids)), progress
    for job_id in ids:
        assert await redis.hget(keys.job(job_id), "state") == "cancelled"

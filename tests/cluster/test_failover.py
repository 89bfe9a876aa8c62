"""A master of the cluster crashes (SIGKILL) and its replica takes over.

Jobs that were only in Redis (parked in the failed master's delayed set, their
records, their webhooks' state) carry on from the replica once it is
promoted: the replica had them, since the test lets replication catch up
before the crash (what a crash *does* lose: docs/deploy.md). The services'
clients find the new master themselves, and the edges' live event streams,
whose pub/sub connection may have been on the failed node, keep working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import pytest_asyncio
from redis.crc import key_slot

from cluster.helpers import PARTITIONS, collect_events, keys_per_partition
from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.delivery.helpers import all_in, wait_webhooks
from support.jobs import submit, wait_final
from support.redis_cluster import LocalRedisCluster, redis_cluster

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[LocalRedisCluster]:
    """3 masters with a replica each; a master silent for 1 s is failed over."""
    with redis_cluster(masters=3, replicas=1, node_timeout_ms=1000) as c:
        yield c


@pytest.fixture(scope="module")
def redis_url(ha_cluster: LocalRedisCluster) -> str:
    return ha_cluster.url


@pytest_asyncio.fixture
async def unpaced(redis, target):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 200, max_concurrent: 50}}\n"))


async def test_a_master_crash_loses_no_replicated_job_and_every_client_reconnects(
    ha_cluster, http, start_edge, coordinator, delivery, api_key, target, receivers, unpaced
):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    hook = await receivers()
    # The victim: the master of the slots of partitions 2 and 3 (0-5460).
    victim = ha_cluster.master_of_slot(key_slot(keys.partition_tag(3).encode()))
    assert victim == ha_cluster.master_of_slot(key_slot(keys.partition_tag(2).encode()))

    # Jobs parked in every partition's delayed set, due while the master is down.
    due_ms = int(time.time() * 1000) + 1000
    parked = []
    for p, (k,) in keys_per_partition("acme", 1, "parked").items():
        payload = {"url": f"{target.url}/echo?p={p}", "idempotent_key": k, "retry_at": due_ms, "webhooks": [{"url": f"{hook.url}/h"}]}
        parked.append((await submit(http, iad.url, api_key, payload))["job_id"])
    # lax's event hub subscribes (on one node; it may well be the victim). The stream is open (its snapshot came)
    # before the kill: a request the loop had not yet sent went out after it and met the failing master (503).
    opened = asyncio.Event()
    watch = asyncio.create_task(collect_events(http, lax.url, api_key, parked[3], timeout_s=30, opened=opened))
    await asyncio.wait_for(opened.wait(), 10)
    pubsub = lax.app[CTX].events.pubsub
    while pubsub.connection is None:
        await asyncio.sleep(0.01)
    ha_cluster.wait_replicated()

    ha_cluster.kill(victim)
    killed_at = time.monotonic()
    await asyncio.to_thread(ha_cluster.wait_ok, 20.0)
    failover_s = time.monotonic() - killed_at
    assert victim not in ha_cluster.master_ports()

    for job_id in parked:
        view = await wait_final(http, lax.url, api_key, job_id, timeout_s=20)
        assert view["status"] == "success", view
        await wait_webhooks(http, lax.url, api_key, job_id, all_in("delivered"), timeout_s=20)
    names = [n for n, _ in await watch]
    assert "completed" in names and "quorum_met" in names, names

    # After the failover: new work in every partition, and a live stream on the other edge. A region whose
    # heartbeats were on the lost master was seen failing: it is usable again EZT_REGION_RECOVER_AFTER_MS after
    # its checks pass (hysteresis), which on a loaded machine can end after the parked jobs did. Wait for it, bounded.
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"{iad.url}/readyz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.2)
    fresh = []
    for p, (k,) in keys_per_partition("acme", 1, "after").items():
        job = await submit(
            http, iad.url, api_key, {"url": f"{target.url}/echo?after={p}", "idempotent_key": k, "retry_at": int(time.time() * 1000) + 300}
        )
        fresh.append(job["job_id"])
    got = await asyncio.gather(*(collect_events(http, lax.url, api_key, j) for j in fresh))
    assert all("completed" in [n for n, _ in g] for g in got), got
    for edge in (iad, lax):
        async with http.get(f"{edge.url}/readyz") as resp:
            assert resp.status == 200
    assert failover_s < 15
    assert len({keys.job_partition(j) for j in parked}) == PARTITIONS

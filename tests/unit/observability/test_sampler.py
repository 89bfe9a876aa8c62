"""coordinator/sampler.py against a real Redis, its state laid down by the real pacing code."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from prometheus_client import generate_latest

from ezthrottle_server.common import keys
from ezthrottle_server.common.metrics import SAMPLED
from ezthrottle_server.common.redisconn import Scripts
from ezthrottle_server.coordinator.lease import Lease
from ezthrottle_server.coordinator.sampler import OTHER, QueueSampler, entry_ms, job_created_ms
from ezthrottle_server.pacing.hints import TargetHints
from ezthrottle_server.pacing.limiter import Limiter, PacingPolicy
from ezthrottle_server.pacing.scope import Scope
from support.services import make_settings


def job_id(created_ms: int) -> str:
    return keys.make_job_id(created_ms, secrets.token_hex(8), 0)


def rows(sample: dict, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(labels): v for labels, v in sample.get(name, [])}


def test_ids_carry_their_time() -> None:
    assert job_created_ms("job_1700000000123_0123456789abcdefp0") == 1700000000123
    assert job_created_ms("garbage") is None
    assert entry_ms("1700000000123-4") == 1700000000123


@pytest.mark.asyncio
async def test_one_pass_reads_queues_delayed_work_webhooks_and_the_busiest_domains(redis, redis_url) -> None:
    settings = make_settings("coordinator", redis_url)
    now = int(time.time() * 1000)
    # Region streams: two entries in iad, 5 s old, one of them read and not acknowledged.
    stream = keys.region_stream(0, "iad")
    await redis.xgroup_create(stream, keys.edge_group("iad"), id="0", mkstream=True)
    await redis.xadd(stream, {"job": job_id(now - 5000)}, id=f"{now - 5000}-0")
    await redis.xadd(stream, {"job": job_id(now - 4000)}, id=f"{now - 4000}-0")
    await redis.xreadgroup(keys.edge_group("iad"), "edge-iad-1", {stream: ">"}, count=1)
    # Delayed work: one 2 s overdue, one due in a minute.
    overdue, later = job_id(now), job_id(now)
    await redis.zadd(keys.delayed(0), {f"lax|{overdue}": now - 2000, f"lax|{later}": now + 60_000})
    # Webhooks: a finished job to plan, two sends queued, a retry waiting, a dead letter.
    await redis.xadd(keys.deliveries(0), {"job": job_id(now)})
    await redis.xadd(keys.delivery_sends(0, "any"), {"job": job_id(now), "hook": "0"})
    await redis.xadd(keys.delivery_sends(0, "ord"), {"job": job_id(now), "hook": "1"})
    await redis.zadd(keys.delivery_scheduled(0), {f"any|{job_id(now)}|0": now + 10_000})
    await redis.zadd(keys.delivery_dead(0), {job_id(now): now})
    # Pacing: a.example waits 3 jobs (the oldest 30 s old) and is paused by a Retry-After, with a
    # header-set rate; b.example waits 2 in lax; c.example 1, which falls into "other".
    policy = PacingPolicy.from_settings(settings)
    iad = Limiter(redis, policy, "iad", settings.region_ids)
    lax = Limiter(redis, policy, "lax", settings.region_ids)
    a, b, c = Scope("a.example:443"), Scope("b.example:443"), Scope("c.example:443")
    await iad.admit(a, [(job_id(now - 30_000), "acme"), (job_id(now - 1000), "acme"), (job_id(now - 500), "acme"), (job_id(now), "acme")])
    grant = await iad.grant(a, inflight=0, want=1, lease_ms=30_000)
    assert len(grant.leases) == 1
    await iad.release(a, grant.leases[0], TargetHints(rps=7.0, pause_until_ms=now + 60_000))
    await lax.admit(b, [(job_id(now - 2000), "acme"), (job_id(now - 2000), "globex")])
    await iad.admit(c, [(job_id(now - 90_000), "acme")])

    lease = Lease(redis, Scripts(redis), "coordinator-test")
    sample = await QueueSampler(settings, redis, lease, top_domains=2).sample()

    depth = rows(sample, "ezt_queue_depth")
    assert depth[("iad", "stream")] == 2 and depth[("lax", "stream")] == 0
    assert depth[("iad", "waiting")] == 3 + 1 and depth[("lax", "waiting")] == 2 and depth[("ord", "waiting")] == 0
    assert depth[("iad", "running")] == 0  # the granted job was released (its attempt is over)
    age = rows(sample, "ezt_queue_oldest_age_seconds")
    assert 5 <= age[("iad", "stream")] < 8 and age[("lax", "stream")] == 0
    assert 90 <= age[("iad", "waiting")] < 95  # c.example's job; fair order puts each domain's head first
    assert rows(sample, "ezt_stream_pending_entries") == {("iad",): 1, ("lax",): 0, ("ord",): 0}
    assert rows(sample, "ezt_delayed_jobs") == {(): 2}
    assert 2 <= rows(sample, "ezt_delayed_overdue_seconds")[()] < 5
    assert rows(sample, "ezt_webhook_backlog") == {("finished",): 1, ("send",): 2, ("scheduled",): 1}
    assert rows(sample, "ezt_webhook_dead_letter_jobs") == {(): 1}

    assert rows(sample, "ezt_domains_active") == {(): 3}
    domains = rows(sample, "ezt_domain_queue_depth")
    assert domains == {
        ("a.example:443", "waiting"): 3,
        ("a.example:443", "running"): 0,
        ("b.example:443", "waiting"): 2,
        ("b.example:443", "running"): 0,
        (OTHER, "waiting"): 1,
        (OTHER, "running"): 0,
    }
    waits = rows(sample, "ezt_domain_oldest_wait_seconds")
    assert 0.9 <= waits[("a.example:443",)] < 30  # the head of a's queue (the 30 s one was granted)
    assert 90 <= waits[(OTHER,)] < 95
    assert rows(sample, "ezt_domain_rps_limit") == {("a.example:443", "header"): 7.0, ("b.example:443", "default"): 2.0}
    assert rows(sample, "ezt_domain_max_concurrent") == {("a.example:443", "default"): 2, ("b.example:443", "default"): 2}
    assert rows(sample, "ezt_domain_paused") == {("a.example:443",): 1.0, ("b.example:443",): 0.0}
    assert 55 < rows(sample, "ezt_domain_pause_remaining_seconds")[("a.example:443",)] <= 60
    assert not any(d == "c.example:443" for name in sample for labels, _ in sample[name] for d in labels[:1])
    assert rows(sample, "ezt_sampler_duration_seconds")[()] > 0


@pytest.mark.asyncio
async def test_an_empty_cluster_samples_zeros(redis, redis_url) -> None:
    settings = make_settings("coordinator", redis_url)
    sample = await QueueSampler(settings, redis, Lease(redis, Scripts(redis), "c")).sample()
    assert set(rows(sample, "ezt_queue_depth").values()) == {0}
    assert rows(sample, "ezt_domains_active") == {(): 0}
    assert "ezt_domain_rps_limit" not in sample


@pytest.mark.asyncio
async def test_only_the_lease_holder_exports_the_sample(redis, redis_url) -> None:
    settings = make_settings("coordinator", redis_url)
    lease = Lease(redis, Scripts(redis), "coordinator-test")
    task = asyncio.create_task(QueueSampler(settings, redis, lease, interval_s=0.02).run())

    async def exported() -> bool:
        return b"ezt_queue_depth{" in generate_latest()

    try:
        await asyncio.sleep(0.1)
        assert not await exported()  # a standby exports none
        lease.is_leader = True
        async with asyncio.timeout(5):
            while not await exported():
                await asyncio.sleep(0.02)
        lease.is_leader = False  # lost the lease: stops exporting at the next pass
        async with asyncio.timeout(5):
            while await exported():
                await asyncio.sleep(0.02)
        lease.is_leader = True
        async with asyncio.timeout(5):
            while not await exported():
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not await exported()  # and none once stopped
    SAMPLED.clear()

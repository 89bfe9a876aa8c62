"""common/metrics.py: naming conventions, bounded labels, primed series, and the increments
of issue 7 (outbound refusals, failed authentication, quorum misses) from the real code paths."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import REGISTRY, generate_latest

from ezthrottle_server.common import keys, metrics
from ezthrottle_server.common.errors import OutboundBlocked
from ezthrottle_server.common.outbound import OutboundPolicy, PolicyResolver, make_connector
from support.jobs import auth, submit
from unit.observability.helpers import exported_names

# Label names a metric may carry. Each has a closed or operator-sized set of
# values; "domain" only on the sampled gauges, which keep the busiest N.
BOUNDED_LABELS = {
    *("region", "status", "reason", "status_class", "route", "outcome", "header", "result", "stage", "source", "domain"),
    *("from", "to"),  # ezt_jobs_evacuated_total: region ids
    *("via", "kind"),  # ezt_jobs_cancelled_total (single, bulk, after_attempt), ezt_bulk_actions_total (cancel, replay)
}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_names_follow_prometheus_conventions() -> None:
    names = exported_names()
    families = {f.name: f for f in REGISTRY.collect() if f.name.startswith("ezt_")}
    for name, kind in names.items():
        assert name == name.lower() and name.startswith("ezt_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            base = name.rsplit("_", 1)[0]
            assert base.endswith("_seconds"), name
        if any(word in name for word in ("latency", "age", "duration", "overdue", "remaining", "wait_")) and kind != "histogram":
            assert name.endswith("_seconds"), f"{name}: a time needs its unit"
    for family in families.values():
        for sample in family.samples:
            extra = set(sample.labels) - BOUNDED_LABELS - {"le"}
            assert not extra, (family.name, extra)
    sampled = {n for n, (_doc, labels) in metrics.SampledGauges.FAMILIES.items() if "domain" in labels}
    for family in families.values():
        if family.name not in sampled:
            assert all("domain" not in s.labels for s in family.samples), family.name


def test_the_metrics_of_the_issue_exist() -> None:
    names = exported_names()
    for wanted in (
        "ezt_race_wins_total",
        "ezt_race_losses_total",
        "ezt_outbound_refused_total",
        "ezt_auth_failures_total",
        "ezt_auth_rate_limited_total",
        "ezt_webhook_quorum_missed_total",
        "ezt_queue_depth",
        "ezt_queue_oldest_age_seconds",
        "ezt_stream_pending_entries",
        "ezt_delayed_jobs",
        "ezt_domain_rps_limit",
        "ezt_domain_max_concurrent",
        "ezt_domain_paused",
        "ezt_domain_queue_depth",
        "ezt_domain_oldest_wait_seconds",
        "ezt_webhook_backlog",
        "ezt_webhook_dead_letter_jobs",
        "ezt_region_state",
        "ezt_coordinator_leader",
        "ezt_webhook_quorum_seconds_bucket",
        # issue 17: job control
        "ezt_jobs_cancelled_total",
        "ezt_jobs_expired_total",
        "ezt_schedule_ticks_total",
        "ezt_bulk_actions_total",
    ):
        assert wanted in names, wanted


def test_prime_creates_a_services_series_at_zero() -> None:
    before = generate_latest().decode()
    assert 'ezt_race_wins_total{region="prime-test"}' not in before
    metrics.prime("edge", "prime-test")
    text = generate_latest().decode()
    for series in (
        'ezt_race_wins_total{region="prime-test"} 0.0',
        'ezt_race_losses_total{region="prime-test"} 0.0',
        'ezt_jobs_submitted_total{region="prime-test"} 0.0',
        'ezt_jobs_finished_total{reason="ok",region="prime-test",status="success"} 0.0',
        'ezt_outbound_refused_total{stage="connect"}',
    ):
        assert series in text, series
    metrics.prime("delivery")
    assert value("ezt_webhook_dead_letters_total", reason="gone") >= 0
    assert 'ezt_webhook_dead_letters_total{reason="window_exhausted"}' in generate_latest().decode()


def test_sampled_gauges_export_only_a_published_sample() -> None:
    gauges = metrics.SampledGauges()
    assert list(gauges.collect()) == []
    gauges.publish({"ezt_delayed_jobs": [((), 3)], "ezt_queue_depth": [(("iad", "waiting"), 2)]})
    got = {f.name: [(s.labels, s.value) for s in f.samples] for f in gauges.collect()}
    assert got["ezt_delayed_jobs"] == [({}, 3)]
    assert got["ezt_queue_depth"] == [({"region": "iad", "stage": "waiting"}, 2)]
    assert got["ezt_domain_paused"] == []  # described, no series
    with pytest.raises(ValueError):
        gauges.publish({"ezt_not_sampled": [((), 1)]})
    gauges.clear()
    assert list(gauges.collect()) == []


class _Static(AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=self.address, port=port, family=family, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


@pytest.mark.asyncio
async def test_outbound_refusals_are_counted_by_stage() -> None:
    policy = OutboundPolicy()
    url, dns, connect = (value("ezt_outbound_refused_total", stage=s) for s in ("url", "dns", "connect"))
    with pytest.raises(OutboundBlocked):
        policy.check_url("http://169.254.169.254/latest/meta-data/")
    policy.check_url("https://api.example/ok")  # allowed: not counted
    assert value("ezt_outbound_refused_total", stage="url") == url + 1

    with pytest.raises(OutboundBlocked):
        await PolicyResolver(policy, _Static("10.0.0.7")).resolve("rebound.example", 443)
    assert value("ezt_outbound_refused_total", stage="dns") == dns + 1

    async with aiohttp.ClientSession(connector=make_connector(policy)) as session:
        with pytest.raises(OutboundBlocked):
            async with session.get("http://127.0.0.1:9/"):  # a literal never meets the resolver
                pass
    assert value("ezt_outbound_refused_total", stage="connect") == connect + 1


@pytest.mark.asyncio
async def test_failed_authentications_and_their_429s_are_counted(http, start_edge, api_key) -> None:
    edge = await start_edge("iad", auth_fail_limit=2, auth_fail_window_s=60)
    failures, limited = value("ezt_auth_failures_total"), value("ezt_auth_rate_limited_total")
    probe = f"{edge.url}/api/v1/jobs/job_1700000000000_0123456789abcdefp0"
    statuses = []
    for _ in range(3):
        async with http.get(probe, headers=auth("ezt_live_wrong-key")) as resp:
            statuses.append(resp.status)
    assert statuses == [401, 401, 429]
    assert value("ezt_auth_failures_total") == failures + 2
    assert value("ezt_auth_rate_limited_total") == limited + 1


@pytest.mark.asyncio
async def test_a_job_that_can_no_longer_reach_its_quorum_is_counted_once(http, edge, delivery, api_key, target, receiver, redis) -> None:
    missed, dead = value("ezt_webhook_quorum_missed_total"), value("ezt_webhook_dead_letters_total", reason="gone")
    gone = f"{target.url}/status/410"
    # Quorum 2 of 3 voters: the first 410 leaves it reachable, the second does not, the third changes nothing.
    lost = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo",
            "idempotent_key": "lost",
            "webhook_quorum": 2,
            "webhooks": [{"url": f"{gone}?a"}, {"url": f"{gone}?b"}, {"url": f"{gone}?c"}],
        },
    )
    # Quorum 1: one voter delivered, the other 410: no miss.
    kept = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo",
            "idempotent_key": "kept",
            "webhooks": [{"url": f"{receiver.url}/ok"}, {"url": gone}],
        },
    )
    assert lost["status"] == kept["status"] == "queued"
    await target.wait_for(4, "/status/410", timeout_s=10)
    await receiver.wait_for(1, timeout_s=10)
    async with asyncio.timeout(10):
        while value("ezt_webhook_quorum_missed_total") < missed + 1 or value("ezt_webhook_dead_letters_total", reason="gone") < dead + 4:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the kept job's 410 and the lost job's third are recorded by now; nothing more may count
    # Once per job: the lost job carries the mark, the kept one does not. (The
    # counter is process-wide, so late work of earlier tests in a long run may
    # add to it; the mark is what makes "once" true.)
    assert await redis.hget(keys.job_webhooks(lost["job_id"]), "quorum_missed_ms")
    assert not await redis.hget(keys.job_webhooks(kept["job_id"]), "quorum_missed_ms")
    assert value("ezt_webhook_quorum_missed_total") >= missed + 1


@pytest.mark.asyncio
async def test_cancels_and_bulk_actions_are_counted(http, edge, api_key, redis) -> None:
    """ezt_jobs_cancelled_total{via} and ezt_bulk_actions_total{kind,outcome} from the real routes (issue 17)."""
    later = {"retry_at": int(time.time() * 1000) + 86_400_000}  # scheduled: never sent while the test runs
    single, bulk, after = (value("ezt_jobs_cancelled_total", via=v) for v in ("single", "bulk", "after_attempt"))
    started, done = (value("ezt_bulk_actions_total", kind="cancel", outcome=o) for o in ("started", "done"))
    jobs = [(await submit(http, edge.url, api_key, {"url": f"https://api.example/{i}", **later}))["job_id"] for i in range(5)]

    async with http.delete(f"{edge.url}/api/v1/jobs/{jobs[0]}", headers=auth(api_key)) as resp:
        assert resp.status == 200
    async with http.post(f"{edge.url}/api/v1/jobs/cancel", json={"job_ids": jobs[1:3]}, headers=auth(api_key)) as resp:
        assert resp.status == 200
    await redis.hset(keys.job(jobs[3]), "sending:iad", int(time.time() * 1000))  # an attempt in flight, as start_attempt.lua marks it
    async with http.delete(f"{edge.url}/api/v1/jobs/{jobs[3]}?after_attempt=true", headers=auth(api_key)) as resp:
        assert resp.status == 202
    async with http.post(f"{edge.url}/api/v1/jobs/cancel", json={"filter": {"status": "scheduled"}}, headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["cancelled"] == 1  # the last one

    assert value("ezt_jobs_cancelled_total", via="single") == single + 1
    assert value("ezt_jobs_cancelled_total", via="bulk") == bulk + 3
    assert value("ezt_jobs_cancelled_total", via="after_attempt") == after + 1
    assert value("ezt_bulk_actions_total", kind="cancel", outcome="started") == started + 1
    assert value("ezt_bulk_actions_total", kind="cancel", outcome="done") == done + 1

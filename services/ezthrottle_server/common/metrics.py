"""Prometheus metrics, created once here and shared by every service.

Names carry units and ``_total``; label values are bounded (regions, status
classes, outcome reasons).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

# -- a node's worker processes (PROMETHEUS_MULTIPROC_DIR): values written out once a flush ---------------

# How stale another worker's values may be in a scrape (a scrape flushes its own), and what a worker killed
# outright loses (docs/deploy.md): about 20 values a flush at most, against a dozen changes a job.
FLUSH_EVERY_S = 0.1
_dirty: set[Any] = set()  # values changed since they were last written to their process's file


def _buffered(mmaped: type) -> type:
    """prometheus-client's multiprocess value (one mmap'd file per process, added up at a scrape), written to its
    file by :func:`flush` rather than at every change: an ``inc`` was a lock, a ``getpid`` and a write into the
    map (about 1.1 us; a histogram's observe two of them), a dozen times a job. The workers are started by exec,
    never forked (common/workers.py), and change their metrics on their event loop's thread only."""

    class BufferedValue(mmaped):  # type: ignore[misc]
        def inc(self, amount: float) -> None:
            self._value += amount
            self._timestamp = 0.0
            _dirty.add(self)

        def set(self, value: float, timestamp: float | None = None) -> None:
            self._value = value
            self._timestamp = timestamp or 0.0
            _dirty.add(self)

    return BufferedValue


def flush() -> None:
    """Write this process's changed values to its metrics file (every FLUSH_EVERY_S, before a scrape, at exit)."""
    while _dirty:
        value = _dirty.pop()
        value._file.write_value(value._key, value._value, value._timestamp)


BUFFERED = bool(getattr(_values.ValueClass, "_multiprocess", False))  # PROMETHEUS_MULTIPROC_DIR was set when this process started
if BUFFERED:
    _values.ValueClass = _buffered(_values.ValueClass)
    atexit.register(flush)


async def flush_periodically() -> None:
    """Run for as long as the service does: its values reach its file at least every FLUSH_EVERY_S."""
    try:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            flush()
    finally:
        flush()


JOBS_SUBMITTED = Counter("ezt_jobs_submitted_total", "Jobs accepted by the API", ["region"])
JOBS_DUPLICATE = Counter("ezt_jobs_duplicate_total", "Submissions answered with an existing job", ["region"])
JOBS_FINISHED = Counter("ezt_jobs_finished_total", "Jobs that reached a final state", ["region", "status", "reason"])
ATTEMPTS = Counter("ezt_attempts_total", "Outbound attempts", ["region", "status_class"])
ATTEMPT_LATENCY = Histogram(
    "ezt_attempt_latency_seconds",
    "Outbound attempt latency",
    ["region"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROUTING_LATENCY = Histogram(
    "ezt_routing_latency_seconds",
    "Time from a pacing grant to the start of its send (how busy the node is); accept to first send is ezt_pacing_wait_seconds",
    ["region"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)
ACCEPT_TO_SEND = Histogram(
    "ezt_accept_to_send_seconds",
    "Jobs sent at once by the node that accepted them (the fast path, pacing/scripts/take.lua): "
    "from submit.lua's answer (the job durable) to the start of the send",
    ["region"],
    buckets=(0.0001, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1),
)
API_REQUESTS = Counter("ezt_api_requests_total", "Public API requests", ["route", "status"])
# Gauges say how worker processes of one node add up on its /metrics (common/workers.py): live ones summed, and so on.
INFLIGHT = Gauge("ezt_edge_inflight_attempts", "Outbound attempts in flight on this node", ["region"], multiprocess_mode="livesum")
ATTEMPT_CRASHES = Counter(
    "ezt_attempt_crashes_total",
    "Attempts that raised an unexpected error (a bug); the third of a job fails it with internal_error",
    ["region"],
)
JOBS_EVACUATED = Counter(
    "ezt_jobs_evacuated_total", "Jobs moved out of a region judged down, to the region they were queued in", ["from", "to"]
)
RECLAIMED = Counter("ezt_jobs_reclaimed_total", "Stream entries reclaimed from dead consumers", ["region"])
DELAYED_RELEASED = Counter("ezt_delayed_released_total", "Delayed jobs released into their streams")
JOBS_REPAIRED = Counter("ezt_jobs_repaired_total", "Jobs found held by nothing (no stream, delayed, queue or lease entry) and queued again")
ADMISSION_REJECTED = Counter("ezt_admission_rejected_total", "Submissions shed by admission control", ["reason"])
REGION_STATE = Gauge(
    "ezt_region_state", "Region health as the coordinator sees it: 2 up, 1 degraded, 0 down", ["region"], multiprocess_mode="livemostrecent"
)
COORDINATOR_LEADER = Gauge("ezt_coordinator_leader", "1 while this coordinator holds the lease", multiprocess_mode="livemax")
WEBHOOK_DELIVERIES = Counter(
    "ezt_webhook_deliveries_total",
    "Webhook POSTs by outcome: delivered, retry, dead (window over, 410 Gone, refused by the outbound policy)",
    ["outcome"],
)
WEBHOOK_QUORUM_LATENCY = Histogram(
    "ezt_webhook_quorum_seconds",
    "Time from a job's final state to its webhook quorum",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
WEBHOOK_DEAD_LETTERS = Counter("ezt_webhook_dead_letters_total", "Webhooks dead-lettered", ["reason"])
WEBHOOK_REPLAYED = Counter("ezt_webhook_replayed_total", "Dead-lettered webhooks queued again by a replay")
WEBHOOK_INFLIGHT = Gauge("ezt_webhook_inflight", "Webhook stream entries this delivery worker is working on", multiprocess_mode="livesum")
WEBHOOK_RECLAIMED = Counter("ezt_webhook_reclaimed_total", "Delivery stream entries reclaimed from dead workers")
WEBHOOK_POSTS = Counter(
    "ezt_webhook_posts_total",
    "Webhook POSTs made, by source: edge (the edge that finished the job, first attempts) or delivery (the delivery service)",
    ["source"],
)
WEBHOOK_HANDOFFS_SWEPT = Counter(
    "ezt_webhook_handoffs_swept_total", "Finished jobs' webhooks the delivery service took over from an edge that did not send them in time"
)
WEBHOOK_HANDED_OVER = Counter(
    "ezt_webhook_handoffs_handed_over_total", "Finished jobs' webhooks an edge had no room to send, given to the delivery service at once"
)

PACING_GRANTS = Counter("ezt_pacing_grants_total", "Jobs the pacer let go to their target domain", ["region"])
PACING_WAIT = Histogram(
    "ezt_pacing_wait_seconds",
    "Time from a job's submission to the grant of its first send (queueing behind its domain's limit)",
    ["region"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
PACING_PAUSES = Counter("ezt_pacing_pauses_total", "Domains paused by a 429/503 Retry-After", ["region"])
PACING_LATE_SENDS = Counter(
    "ezt_pacing_late_sends_total", "Granted sends that left late (busy node); their domain's schedule moved back", ["region"]
)
PACING_HEADER_INVALID = Counter("ezt_pacing_header_invalid_total", "Rate-limit headers from targets ignored as invalid", ["header"])
PACING_LEASES_RECOVERED = Counter(
    "ezt_pacing_leases_recovered_total", "Granted jobs queued again because their node's lease expired", ["region"]
)
PACING_CONFIG_LOADS = Counter("ezt_pacing_config_loads_total", "domains.yaml loads by result (applied, unchanged, error)", ["result"])

# Races (issue 7): the region whose final outcome claims a raced job wins; every
# other region that had it queued or in flight loses. Incremented by the racing code.
RACE_WINS = Counter("ezt_race_wins_total", "Raced jobs whose final outcome this region claimed first", ["region"])
RACE_LOSSES = Counter("ezt_race_losses_total", "Raced jobs another region claimed first (this region's copy stopped)", ["region"])

OUTBOUND_REFUSED = Counter(
    "ezt_outbound_refused_total",
    "Destinations the outbound policy refused, by where: url (submit, redirect, webhook URL), dns, connect",
    ["stage"],
)
AUTH_FAILURES = Counter("ezt_auth_failures_total", "Failed authentications (malformed header, unknown or revoked key)")
AUTH_RATE_LIMITED = Counter("ezt_auth_rate_limited_total", "Requests answered 429 for too many failed authentications from their address")
WEBHOOK_PACED = Counter(
    "ezt_webhook_paced_total",
    "Webhook sends held back for later by their destination host's pace (EZT_DELIVERY_HOST_RPS), no attempt spent",
)
SECRETS_REFUSED = Counter(
    "ezt_secrets_refused_total",
    "Stored webhook secrets refused when read: unsealed while EZT_SECRETS_KEYS is set, sealed with a key not listed, or altered",
    ["reason"],
)
WEBHOOK_QUORUM_MISSED = Counter(
    "ezt_webhook_quorum_missed_total", "Jobs whose webhook quorum became unreachable (too many voting webhooks dead-lettered)"
)
JOBS_CANCELLED = Counter(
    "ezt_jobs_cancelled_total",
    "Jobs cancelled: at once one by one (via=single: DELETE /api/v1/jobs/{id}, the console, the admin CLI) or many (via=bulk:"
    " by ids or a filter); via=after_attempt: requested with an attempt in flight, cancelled when it ends",
    ["via"],
)
JOBS_EXPIRED = Counter(
    "ezt_jobs_expired_total", "Jobs ended expired: not started before their deadline (reason=start_before_passed)", ["reason"]
)
SCHEDULE_TICKS = Counter(
    "ezt_schedule_ticks_total",
    "Schedule ticks by outcome: fired (a job submitted), skipped (overlap=skip, the last fired job not yet final),"
    " missed_collapsed (ticks missed while no coordinator fired them, folded into one fire)",
    ["outcome"],
)
BULK_ACTIONS = Counter(
    "ezt_bulk_actions_total",
    "Bulk actions (kind: cancel, replay) by outcome: started, done, failed, resumed (taken over from a silent runner),"
    " refused (the customer's cap of running actions)",
    ["kind", "outcome"],
)

# Connection reuse (issue 19): each outbound request takes a connection from its session's pool; a new one
# costs a TCP (and TLS) handshake. kind: target (jobs' sends, redirects, health probes), webhook, other.
OUTBOUND_REQUESTS = Counter("ezt_outbound_requests_total", "Outbound HTTP requests (each redirect hop is one), by kind", ["kind"])
OUTBOUND_CONNECTIONS_OPENED = Counter(
    "ezt_outbound_connections_opened_total",
    "New outbound connections (the rest of ezt_outbound_requests_total reused a pooled one), by kind",
    ["kind"],
)


class SampledGauges:
    """Gauges the active coordinator samples from Redis (``coordinator/sampler.py``).

    Only the process that published a sample exports them (the active
    coordinator), so sums across processes never count a queue twice; a
    standby or a node that lost the lease exports none. ``publish`` swaps the
    whole sample at once: a scrape never sees half of one.
    """

    FAMILIES: Mapping[str, tuple[str, Sequence[str]]] = {
        "ezt_queue_depth": (
            "Jobs of a region by stage: stream (not yet admitted), waiting (behind their domain's limit), running (granted)",
            ("region", "stage"),
        ),
        "ezt_queue_oldest_age_seconds": (
            "Age of the oldest stream entry (stage=stream),"
            " or since submission of the oldest job at the head of a pacing queue (stage=waiting)",
            ("region", "stage"),
        ),
        "ezt_stream_pending_entries": ("Stream entries read by an edge but not yet acknowledged (XPENDING)", ("region",)),
        "ezt_delayed_jobs": ("Jobs waiting for their retry_at or retry backoff in the delayed sets", ()),
        "ezt_delayed_overdue_seconds": ("How far past its due time the first delayed job is (0: on time)", ()),
        "ezt_webhook_backlog": (
            "Webhook work by stage: finished (jobs not yet planned), send (POSTs queued), scheduled (retries waiting)",
            ("stage",),
        ),
        "ezt_webhook_dead_letter_jobs": ("Jobs with a dead-lettered webhook, kept for replay", ()),
        "ezt_domains_active": ("Target domains with jobs waiting or running", ()),
        "ezt_domain_queue_depth": (
            'Jobs of a target domain (the busiest N by name, the rest as domain="other") by stage: waiting, running',
            ("domain", "stage"),
        ),
        "ezt_domain_oldest_wait_seconds": ("Since submission of the oldest job at the head of the domain's queues", ("domain",)),
        "ezt_domain_rps_limit": (
            "The domain's current requests/s limit, by where it comes from: default, config, header or learned (from 429s)",
            ("domain", "source"),
        ),
        "ezt_domain_max_concurrent": ("The domain's current in-flight limit per node, by source", ("domain", "source")),
        "ezt_domain_paused": ("1 while the domain is paused by a Retry-After", ("domain",)),
        "ezt_domain_circuit_state": (
            "The domain's circuit breaker: 0 closed, 1 half open (a probe may go), 2 open (consecutive infrastructure failures)",
            ("domain",),
        ),
        "ezt_domain_pause_remaining_seconds": ("Time left on the domain's Retry-After pause", ("domain",)),
        "ezt_sampler_duration_seconds": ("How long the last Redis sample took", ()),
        "ezt_sampler_last_success_timestamp_seconds": ("When the last Redis sample completed (Unix time)", ()),
    }

    def __init__(self) -> None:
        self._sample: Mapping[str, Iterable[tuple[Sequence[str], float]]] | None = None

    def publish(self, sample: Mapping[str, Iterable[tuple[Sequence[str], float]]]) -> None:
        unknown = set(sample) - set(self.FAMILIES)
        if unknown:
            raise ValueError(f"not a sampled gauge: {sorted(unknown)}")
        self._sample = {name: list(rows) for name, rows in sample.items()}

    def clear(self) -> None:
        self._sample = None

    def describe(self) -> Iterator[Metric]:
        for name, (doc, labels) in self.FAMILIES.items():
            yield GaugeMetricFamily(name, doc, labels=list(labels))

    def collect(self) -> Iterator[Metric]:
        sample = self._sample
        if sample is None:
            return
        for name, (doc, labels) in self.FAMILIES.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for values, value in sample.get(name, ()):
                family.add_metric(list(values), value)
            yield family


SAMPLED = SampledGauges()
REGISTRY.register(SAMPLED)


def prime(role: str, region: str | None = None) -> None:
    """Create a service's labelled series at 0 before their first event.

    A counter series that appears at 1 has no increase() in Prometheus, so an
    alert on the first dead letter would never fire; and a dashboard's series
    should exist before traffic. Label values primed here are closed sets.
    """
    if role == "edge" and region:
        for counter in (
            JOBS_SUBMITTED,
            JOBS_DUPLICATE,
            RECLAIMED,
            PACING_GRANTS,
            PACING_PAUSES,
            PACING_LATE_SENDS,
            PACING_LEASES_RECOVERED,
            RACE_WINS,
            RACE_LOSSES,
            ATTEMPT_CRASHES,
        ):
            counter.labels(region)
        for status, reason in (("success", "ok"), ("failed", "non_retryable_status")):
            JOBS_FINISHED.labels(region, status, reason)
        for status_class in ("2xx", "3xx", "4xx", "5xx", "timeout", "connection"):
            ATTEMPTS.labels(region, status_class)
        for histogram in (ATTEMPT_LATENCY, ROUTING_LATENCY, PACING_WAIT, ACCEPT_TO_SEND):
            histogram.labels(region)
        INFLIGHT.labels(region)
        ADMISSION_REJECTED.labels("redis_memory")
        ADMISSION_REJECTED.labels("queued_per_customer")
        ADMISSION_REJECTED.labels("bytes_per_customer")
        for header in ("x-aqueduct-rps", "x-ezthrottle-rps", "x-aqueduct-max-concurrent", "x-ezthrottle-max-concurrent"):
            PACING_HEADER_INVALID.labels(header)  # pacing/hints.py reads these
    if role in ("edge", "delivery"):
        for stage in ("url", "dns", "connect"):
            OUTBOUND_REFUSED.labels(stage)
        for kind in ("target", "webhook") if role == "edge" else ("webhook",):
            OUTBOUND_REQUESTS.labels(kind)
            OUTBOUND_CONNECTIONS_OPENED.labels(kind)
    if role in ("edge", "delivery"):  # the edge that finishes a job sends its webhooks' first attempts (edge/webhooks.py)
        for outcome in ("delivered", "retry", "dead"):
            WEBHOOK_DELIVERIES.labels(outcome)
        for reason in ("gone", "window_exhausted", "outbound_blocked"):
            WEBHOOK_DEAD_LETTERS.labels(reason)
    if role in ("edge", "delivery"):
        WEBHOOK_POSTS.labels(role)
    if role == "edge":
        for via in ("single", "bulk", "after_attempt"):
            JOBS_CANCELLED.labels(via)
        for kind in ("cancel", "replay"):
            for outcome in ("started", "done", "failed", "resumed", "refused"):
                BULK_ACTIONS.labels(kind, outcome)
    if role == "coordinator":  # not ezt_region_state: 0 would say "down" before the first look
        PACING_CONFIG_LOADS.labels("error")
        JOBS_EXPIRED.labels("start_before_passed")
        for outcome in ("fired", "skipped", "missed_collapsed"):
            SCHEDULE_TICKS.labels(outcome)


_multiprocess: CollectorRegistry | None = None


def use_multiprocess_dir(path: str) -> None:
    """Answer ``/metrics`` with every process's metrics in ``path`` (PROMETHEUS_MULTIPROC_DIR) added up.

    The worker processes of one node (common/workers.py) each write their
    metrics there; whichever answers a scrape reads them all, so counters are
    the node's totals. Gauges add up as their ``multiprocess_mode`` says.
    """
    global _multiprocess
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(SAMPLED)
    _multiprocess = registry


async def metrics_handler(_request: web.Request) -> web.Response:
    flush()  # this process's own values as of now; the other workers' as of their last flush
    resp = web.Response(body=generate_latest(_multiprocess or REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp


@functools.cache
def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, made once per label values: a job's path counts into the same few children
    (``labels`` validates and looks up under a lock each time; ``cache`` keys are the metric and the values)."""
    return metric.labels(*values)

"""Prometheus metrics, created once here and shared by every service.

Names carry units and ``_total``; label values are bounded (regions, status
classes, outcome reasons).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
    "Time from reading a job off the stream to the start of its send",
    ["region"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)
API_REQUESTS = Counter("ezt_api_requests_total", "Public API requests", ["route", "status"])
INFLIGHT = Gauge("ezt_edge_inflight_attempts", "Outbound attempts in flight on this node", ["region"])
RECLAIMED = Counter("ezt_jobs_reclaimed_total", "Stream entries reclaimed from dead consumers", ["region"])
DELAYED_RELEASED = Counter("ezt_delayed_released_total", "Delayed jobs released into their streams")
ADMISSION_REJECTED = Counter("ezt_admission_rejected_total", "Submissions shed by admission control", ["reason"])
REGION_STATE = Gauge("ezt_region_state", "Region health as the coordinator sees it: 2 up, 1 degraded, 0 down", ["region"])
COORDINATOR_LEADER = Gauge("ezt_coordinator_leader", "1 while this coordinator holds the lease")
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
WEBHOOK_INFLIGHT = Gauge("ezt_webhook_inflight", "Webhook stream entries this delivery worker is working on")
WEBHOOK_RECLAIMED = Counter("ezt_webhook_reclaimed_total", "Delivery stream entries reclaimed from dead workers")

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
PACING_HEADER_INVALID = Counter(
    "ezt_pacing_header_invalid_total", "Rate-limit headers from targets ignored as invalid", ["header"]
)
PACING_LEASES_RECOVERED = Counter(
    "ezt_pacing_leases_recovered_total", "Granted jobs queued again because their node's lease expired", ["region"]
)
PACING_CONFIG_LOADS = Counter("ezt_pacing_config_loads_total", "domains.yaml loads by result (applied, unchanged, error)", ["result"])

async def metrics_handler(_request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp

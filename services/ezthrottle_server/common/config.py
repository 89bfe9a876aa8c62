"""Settings, built once at start from `regions.yaml`, the environment and defaults.

Order of precedence (later wins): defaults < regions.yaml < environment.
No other module reads ``os.environ``: processes call :func:`load_settings`
once and pass the frozen result down.

Environment variables (all optional):

====================================  =========================================
``EZT_REGIONS_FILE``                  path to regions.yaml (default: ./regions.yaml)
``EZT_PROFILE``                       ``local`` (loopback targets allowed) or ``production``
``REDIS_URL``                         Redis to use (default: the embedded one's port): ``redis://host:port/0``
                                      (``rediss://`` TLS) one server; ``redis+cluster://host:port``
                                      (``rediss+cluster://``) Redis Cluster, from any one node (common/redisconn.py)
``EZT_REGION``                        this edge's region id
``EZT_NODE_ID``                       this process's node id (default: role-region-pid)
``EZT_HOST`` / ``EZT_PORT``           listen address of this process's HTTP server
``EZT_PUBLIC_URL``                    how clients reach this node (default http://host:port)
``EZT_MAX_BODY_BYTES``                request body limit of the public API (413 above)
``EZT_MAX_BATCH_JOBS``                most jobs in one ``POST /api/v1/jobs/batch`` (100; 400 above); its body may be
                                      ``EZT_MAX_BODY_BYTES`` x min(this, 10), each job within ``EZT_MAX_BODY_BYTES``
``EZT_IDEMPOTENCY_TTL_S``             how long an idempotent key deduplicates
``EZT_JOB_TTL_S``                     how long a finished job stays readable
``EZT_VISIBILITY_TIMEOUT_MS``         idle time after which a dead node's jobs are reclaimed
``EZT_ATTEMPT_TIMEOUT_S``             per-attempt outbound timeout
``EZT_RETRY_BACKOFF_BASE_S``          first retry's backoff ceiling (full jitter, doubling)
``EZT_RETRY_BACKOFF_CAP_S``           largest backoff between retries
``EZT_RESPONSE_BODY_CAP_BYTES``       stored response bodies are cut (and marked) above this
``EZT_EXECUTOR_CONCURRENCY``          outbound attempts in flight per edge node
``EZT_STOP_GRACE_S``                  on SIGTERM, how long an edge lets its sends finish before handing them back (10)
``EZT_EDGE_WORKERS``                  edge processes per node, on one port (default: the cores this process may use; 1: no
                                      supervisor). Each is its own node to pacing (per-node caps) and health (common/workers.py)
``EZT_DELIVERY_WORKERS``              delivery processes per node, likewise (default: the cores this process may use)
``PROMETHEUS_MULTIPROC_DIR``          where worker processes keep their metrics for /metrics to sum (default: a fresh
                                      temporary folder per node; emptied at start)
``EZT_LISTEN_FD``, ``EZT_SUPERVISOR_FD``, ``EZT_WORKER_INDEX``  set by the supervisor for each worker it starts; never by hand
``EZT_PARTITIONS``                    number of job partitions, one hash slot each: on a cluster, several per
                                      master (docs/deploy.md); the same in every process
``EZT_REGION_SILENT_AFTER_MS``        a region with no heartbeat for this long is down
``EZT_REGION_RECOVER_AFTER_MS``       sustained health needed before a region seen failing is up again
``EZT_HEALTH_TARGETS``                comma list of URLs every edge probes for region health (regions.yaml
                                      ``health_targets``, global or per region; default: the other regions' edges' /healthz)
``EZT_REGION_PROBE_INTERVAL_S``       how often an edge probes its health targets (0.5)
``EZT_REGION_PROBE_TIMEOUT_S``        a probe without an answer this long has failed (0.75)
``EZT_ADMISSION_MAX_REDIS_MEMORY_BYTES`` shed new jobs (429) above this Redis memory use
``EZT_ADMISSION_MAX_QUEUED_PER_CUSTOMER`` shed a customer's new jobs (429) while it has this many not final (0: off;
                                      unset: 100,000 in the production profile, off in the local one)
``EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER`` shed a customer's new jobs (429) while its jobs' records and kept results hold this
                                      many bytes of Redis (common/storage.py; 0: off; unset: a quarter of the memory ceiling
                                      above in the production profile, off in the local one)
``EZT_SEND_IDEMPOTENCY_KEY``          ``1``/``0``: send the job's idempotent key as Idempotency-Key (default 1)
``EZT_SIMULATE_LATENCY``              ``1``/``0``: add regions.yaml latency to outbound sends
``EZT_DELIVERY_TIMEOUT_S``            per-attempt timeout of a webhook POST
``EZT_DELIVERY_BACKOFF_BASE_S``       first webhook retry's delay ceiling (doubling, equal jitter)
``EZT_DELIVERY_BACKOFF_CAP_S``        largest delay between webhook retries
``EZT_DELIVERY_WINDOW_S``             how long a webhook is retried before it is dead-lettered
``EZT_DELIVERY_CONCURRENCY``          webhook POSTs in flight per delivery worker
``EZT_DELIVERY_HOST_RPS``             webhook POSTs per second from one customer to one destination host, all workers (50; 0: off)
``EZT_DELIVERY_HOST_BURST``           webhook POSTs one host may get at once before that rate applies (50)
``EZT_EDGE_DELIVERS_WEBHOOKS``        ``1`` (default): the edge that finished a job sends the first attempt of its webhooks; ``0``: the
                                      delivery service sends every attempt
``EZT_EDGE_WEBHOOK_GRACE_S``          how long a finished job's webhooks wait for their edge before the delivery service takes them (5)
``EZT_DELIVERY_POLL_S``               how often a delivery worker releases due retries
``EZT_OUTBOUND_ALLOW_LOOPBACK``       ``1``/``0``: send to loopback (default: yes in the local profile only)
``EZT_OUTBOUND_ALLOW_CIDRS``          comma list of networks reachable although not public (``10.1.0.0/16``)
``EZT_OUTBOUND_ALLOW_HOSTS``          comma list of names exempt from the host-name rules (``billing.corp``, ``*.corp``)
``EZT_OUTBOUND_ALLOWED_PORTS``        comma list of ports sends may use besides 80 and 443 in the production profile
                                      (the local profile allows any port)
``EZT_REDIRECT_SENSITIVE_HEADERS``    comma list of job headers dropped, like ``Authorization``, ``Cookie`` and
                                      ``Proxy-Authorization``, when a redirect leads to another origin (``X-Api-Key``)
``EZT_AUTH_FAIL_LIMIT``               failed authentications per client address per window before 429 (0: off)
``EZT_AUTH_FAIL_WINDOW_S``            that window, in seconds
``EZT_TRUSTED_PROXIES``               comma list of proxy networks whose ``X-Forwarded-For`` names the client
``EZT_DOMAINS_FILE``                  per-domain pacing overrides (default: domains.yaml beside regions.yaml)
``EZT_PACING_DEFAULT_RPS``            a domain's requests/s unless config or its headers say otherwise (2)
``EZT_PACING_DEFAULT_MAX_CONCURRENT`` a domain's requests in flight per node, likewise (2)
``EZT_PACING_MAX_RPS``                operator ceiling on any domain's requests/s (100)
``EZT_PACING_MAX_CONCURRENT``         operator ceiling on any domain's in flight per node (64)
``EZT_PACING_WINDOW_MARGIN_MS``       a domain allowed N/s gets at most N sends in any 1 s plus this (20 ms)
``EZT_METRICS_SAMPLE_S``              how often the active coordinator samples queue and domain gauges (5)
``EZT_SECRETS_KEYS``                  keys sealing webhook secrets at rest: ``id:base64(32 bytes)[,older…]`` (common/secretbox.py)
``EZT_INSECURE_PLAINTEXT_SECRETS``    ``1``: let a production-profile service start without EZT_SECRETS_KEYS (secrets stored in clear)
``EZT_SCHEDULES_MAX_PER_CUSTOMER``    the most schedules a customer may have (100; POST /api/v1/schedules answers 400 above)
``EZT_BULK_MAX_RUNNING_PER_CUSTOMER`` bulk actions (cancel by filter, dead-letter replay) one customer may have running at once (4;
                                      429 ``too_many_bulk_actions`` above)
``EZT_BULK_LEASE_S``                  a bulk action's runner renews its lease this often at most; one silent this long is taken over
                                      by another edge (10)
``EZT_REPAIR_AFTER_S``                a job held by nothing (no stream entry, delayed entry, pacing queue or lease) this long is queued
                                      again (60)
``EZT_OPERATOR_TOKEN``                signs an operator into ``/console`` (every customer, regions, domains); unset: no operator sign-in
====================================  =========================================
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import EZThrottleServerError
from .quotas import DEFAULT_TIER, DEFAULT_TIERS, Tier, tiers_from_config
from .secretbox import parse_keys

DEFAULT_REDIS_PORT = 6390
BATCH_BODY_JOBS = 10  # a batch's body may be this many single bodies (max_batch_body_bytes)
PRODUCTION_MAX_QUEUED_PER_CUSTOMER = 100_000  # the production profile's ceiling unless EZT_ADMISSION_MAX_QUEUED_PER_CUSTOMER says


class ConfigError(EZThrottleServerError, ValueError):
    """The configuration is unusable; the message names the setting."""


@dataclass(frozen=True)
class RegionConfig:
    id: str
    port: int
    latency_mean_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    health_targets: tuple[str, ...] = ()  # URLs this region's edges probe (edge/probes.py); () the global list


@dataclass(frozen=True)
class Settings:
    regions: tuple[RegionConfig, ...]
    redis_url: str
    profile: str = "local"
    region: str | None = None
    node_id: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str = ""  # how clients reach this node; default http://host:port
    coordinator_port: int = 8710
    delivery_port: int = 8720
    embedded_redis_port: int = DEFAULT_REDIS_PORT
    max_body_bytes: int = 1024 * 1024
    max_batch_jobs: int = 100  # POST /api/v1/jobs/batch: jobs in one request (edge/api.py)
    idempotency_ttl_s: int = 24 * 3600
    retry_at_horizon_ms: int = 30 * 24 * 3600 * 1000  # a retry_at further ahead is refused (400)
    job_ttl_s: int = 7 * 24 * 3600
    visibility_timeout_ms: int = 30_000
    attempt_timeout_s: float = 30.0
    retry_backoff_base_s: float = 0.5
    send_idempotency_key: bool = True  # send the job's key as Idempotency-Key unless the user set one
    retry_backoff_cap_s: float = 30.0
    response_body_cap_bytes: int = 256 * 1024  # a longer answer is stored truncated, flagged "truncated"
    executor_concurrency: int = 256
    stop_grace_s: float = 10.0  # edge/worker.py: sends in flight get this long on SIGTERM, then go back to the queue
    # Worker processes per node on one port (common/workers.py); 0: the cores this process may use.
    edge_workers: int = 0
    delivery_workers: int = 0
    metrics_multiproc_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR: the workers' metric files ("" one process, or the supervisor makes one)
    # Set by the supervisor for each worker it starts, never by hand (common/workers.py): the inherited
    # listening socket's descriptor, the pipe that closes when the supervisor dies, and the worker's index.
    listen_fd: int = -1
    supervisor_fd: int = -1
    worker_index: int = -1
    read_batch: int = 64
    partitions: int = 1
    simulate_latency: bool = True
    api_key_cache_s: float = 2.0
    # Outbound policy (common/outbound.py). None: the profile decides (local: allowed).
    outbound_allow_loopback: bool | None = None
    outbound_allow_cidrs: tuple[str, ...] = ()
    outbound_allow_hosts: tuple[str, ...] = ()
    outbound_allowed_ports: tuple[int, ...] = ()  # production: sends go to 80, 443 and these (local: any port)
    redirect_sensitive_headers: tuple[str, ...] = ()  # lower case; dropped with the credentials on a cross-origin redirect
    # Failed authentications per client address (edge/auth.py), counted in Redis by every node.
    auth_fail_limit: int = 20
    auth_fail_window_s: int = 60
    trusted_proxies: tuple[str, ...] = ()
    region_silent_after_ms: int = 2500
    region_recover_after_ms: int = 5000
    # Region health probes (edge/probes.py): URLs every edge GETs through its outbound path;
    # a region's own list in regions.yaml wins; () means the other regions' live edges' /healthz.
    health_targets: tuple[str, ...] = ()
    region_probe_interval_s: float = 0.5
    region_probe_timeout_s: float = 0.75
    # TEST-ONLY fault injection, never read from the environment or regions.yaml: the edge
    # sends through edge/faults.py's FaultyExecutor, whose `broken` switch tests flip.
    test_outbound_fault: bool = False
    test_hold_edge_webhooks: bool = False  # tests only (edge/webhooks.py): the edge finishes jobs and never takes their webhooks
    delivery_timeout_s: float = 10.0
    delivery_backoff_base_s: float = 10.0
    delivery_backoff_cap_s: float = 3600.0
    delivery_window_s: float = 24 * 3600.0
    delivery_concurrency: int = 64
    delivery_host_rps: float = 50.0  # one customer's webhook POSTs a second to one host (common/webhooks.py, webhook_pace.lua); 0: off
    delivery_host_burst: int = 50
    delivery_poll_s: float = 0.1
    edge_delivers_webhooks: bool = True  # edge/webhooks.py: the finishing edge sends each webhook's first attempt
    edge_webhook_grace_s: float = 5.0  # a hand-off (finish.lua) the edge has not taken by then goes to the delivery service
    # Pacing (pacing/): cluster-wide defaults and ceilings; every node must agree.
    domains_file: str = "domains.yaml"
    pacing_default_rps: float = 2.0
    pacing_default_max_concurrent: int = 2
    pacing_max_rps: float = 100.0
    pacing_max_concurrent: int = 64
    pacing_min_rps: float = 0.01  # header values below are raised to this
    pacing_rate_margin: float = 0.01  # grants 1% under the limit; space.lua keeps N+1 out of any second at the send
    pacing_tolerance_ms: float = 5.0  # GCRA slack for scheduling jitter
    pacing_window_margin_ms: float = 20.0  # space.lua: N sends per (1 s + this), for jitter between a send and its arrival
    pacing_handoff_grace_ms: float = 50.0  # a token left unclaimed by the region first in fair order goes to any region
    pacing_header_ttl_s: float = 3600.0  # a header-set limit lapses this long after it was last seen
    pacing_max_pause_s: float = 3600.0  # longest Retry-After pause honoured
    admission_max_redis_memory_bytes: int = 0  # 0: 90% of Redis maxmemory, else 80% of its machine's memory
    admission_max_queued_per_customer: int = 0  # 0: no ceiling on a customer's jobs not yet final (production: 100,000 unless set)
    admission_max_bytes_per_customer: int = 0  # 0: no budget; -1 (production unless set): a quarter of the memory ceiling
    schedules_max_per_customer: int = 100  # POST /api/v1/schedules refuses more (400)
    bulk_max_running_per_customer: int = 4  # common/bulk.py: a customer's bulk actions running at once (429 above)
    bulk_lease_s: float = 10.0  # common/bulk.py: a runner silent this long loses its action to another edge
    metrics_sample_s: float = 5.0  # coordinator/sampler.py: queue, delayed, webhook and domain gauges
    secrets_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # never printed
    insecure_plaintext_secrets: bool = False  # production starts without secrets_keys only with this (common/service.py)
    repair_after_s: float = 60.0  # coordinator/repair.py: how long a job is seen held by nothing before it is queued again
    operator_token: str = field(default="", repr=False)  # EZT_OPERATOR_TOKEN: the console's operator sign-in; never printed
    tiers: Mapping[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    default_tier: str = DEFAULT_TIER
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_batch_body_bytes(self) -> int:
        """A batch's body limit: as many single bodies as it has jobs, up to ten (each job still within ``max_body_bytes``)."""
        return self.max_body_bytes * min(self.max_batch_jobs, BATCH_BODY_JOBS)

    @property
    def region_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.regions)

    def probe_targets(self, region_id: str) -> tuple[str, ...]:
        """The health targets configured for a region's edges (its own, else the global ones)."""
        return self.region_config(region_id).health_targets or self.health_targets

    def region_config(self, region_id: str) -> RegionConfig:
        for r in self.regions:
            if r.id == region_id:
                return r
        raise ConfigError(f"unknown region {region_id!r}; regions.yaml has {', '.join(self.region_ids)}")

    @property
    def allow_loopback_targets(self) -> bool:
        """Loopback targets: the local profile sends to them, production refuses
        them, and ``outbound.allow_loopback`` / ``EZT_OUTBOUND_ALLOW_LOOPBACK`` overrides both."""
        if self.outbound_allow_loopback is not None:
            return self.outbound_allow_loopback
        return self.profile == "local"

    def workers(self, role: str) -> int:
        """How many processes of ``role`` this node runs on its port (``EZT_EDGE_WORKERS``, ``EZT_DELIVERY_WORKERS``;
        unset: the cores this process may use). Other roles run one."""
        wanted = {"edge": self.edge_workers, "delivery": self.delivery_workers}.get(role, 1)
        return wanted or usable_cores()

    @property
    def advertised_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def environment(**changes: str) -> dict[str, str]:
    """This process's environment with ``changes``: what a supervisor hands the workers it starts
    (common/workers.py), which load their own settings from it."""
    return {**os.environ, **changes}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no sched_getaffinity off Linux
        return max(1, os.cpu_count() or 1)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"regions file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"regions file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"regions file {path} must be a mapping at the top level")
    return data


def _regions_from_yaml(data: Mapping[str, Any], path: Path) -> tuple[RegionConfig, ...]:
    raw = data.get("regions")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: 'regions' must be a non-empty list")
    regions: list[RegionConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ConfigError(f"{path}: regions[{i}] needs a string 'id'")
        rid = item["id"]
        if rid in seen:
            raise ConfigError(f"{path}: region {rid!r} is listed twice")
        seen.add(rid)
        latency = item.get("latency_ms") or {}
        if not isinstance(latency, dict):
            raise ConfigError(f"{path}: regions[{i}].latency_ms must be a mapping with mean and jitter")
        try:
            regions.append(
                RegionConfig(
                    id=rid,
                    port=int(item["port"]),
                    latency_mean_ms=float(latency.get("mean", 0)),
                    latency_jitter_ms=float(latency.get("jitter", 0)),
                    health_targets=_urls(item.get("health_targets"), f"{path}: regions[{i}].health_targets"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: regions[{i}] ({rid}) needs an integer 'port' and numeric latency") from exc
    return tuple(regions)


_ENV_INT = {
    "EZT_MAX_BODY_BYTES": "max_body_bytes",
    "EZT_MAX_BATCH_JOBS": "max_batch_jobs",
    "EZT_IDEMPOTENCY_TTL_S": "idempotency_ttl_s",
    "EZT_RETRY_AT_HORIZON_MS": "retry_at_horizon_ms",
    "EZT_JOB_TTL_S": "job_ttl_s",
    "EZT_VISIBILITY_TIMEOUT_MS": "visibility_timeout_ms",
    "EZT_RESPONSE_BODY_CAP_BYTES": "response_body_cap_bytes",
    "EZT_EXECUTOR_CONCURRENCY": "executor_concurrency",
    "EZT_PARTITIONS": "partitions",
    "EZT_DELIVERY_CONCURRENCY": "delivery_concurrency",
    "EZT_DELIVERY_HOST_BURST": "delivery_host_burst",
    "EZT_PORT": "port",
    "EZT_PACING_DEFAULT_MAX_CONCURRENT": "pacing_default_max_concurrent",
    "EZT_PACING_MAX_CONCURRENT": "pacing_max_concurrent",
    "EZT_REGION_SILENT_AFTER_MS": "region_silent_after_ms",
    "EZT_ADMISSION_MAX_REDIS_MEMORY_BYTES": "admission_max_redis_memory_bytes",
    "EZT_ADMISSION_MAX_QUEUED_PER_CUSTOMER": "admission_max_queued_per_customer",
    "EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER": "admission_max_bytes_per_customer",
    "EZT_SCHEDULES_MAX_PER_CUSTOMER": "schedules_max_per_customer",
    "EZT_BULK_MAX_RUNNING_PER_CUSTOMER": "bulk_max_running_per_customer",
    "EZT_REGION_RECOVER_AFTER_MS": "region_recover_after_ms",
    "EZT_EDGE_WORKERS": "edge_workers",
    "EZT_DELIVERY_WORKERS": "delivery_workers",
    "EZT_LISTEN_FD": "listen_fd",
    "EZT_SUPERVISOR_FD": "supervisor_fd",
    "EZT_WORKER_INDEX": "worker_index",
}
_ENV_FLOAT = {
    "EZT_BULK_LEASE_S": "bulk_lease_s",
    "EZT_ATTEMPT_TIMEOUT_S": "attempt_timeout_s",
    "EZT_RETRY_BACKOFF_BASE_S": "retry_backoff_base_s",
    "EZT_RETRY_BACKOFF_CAP_S": "retry_backoff_cap_s",
    "EZT_DELIVERY_TIMEOUT_S": "delivery_timeout_s",
    "EZT_DELIVERY_BACKOFF_BASE_S": "delivery_backoff_base_s",
    "EZT_DELIVERY_BACKOFF_CAP_S": "delivery_backoff_cap_s",
    "EZT_DELIVERY_WINDOW_S": "delivery_window_s",
    "EZT_DELIVERY_POLL_S": "delivery_poll_s",
    "EZT_DELIVERY_HOST_RPS": "delivery_host_rps",
    "EZT_EDGE_WEBHOOK_GRACE_S": "edge_webhook_grace_s",
    "EZT_PACING_DEFAULT_RPS": "pacing_default_rps",
    "EZT_PACING_MAX_RPS": "pacing_max_rps",
    "EZT_PACING_WINDOW_MARGIN_MS": "pacing_window_margin_ms",
    "EZT_METRICS_SAMPLE_S": "metrics_sample_s",
    "EZT_STOP_GRACE_S": "stop_grace_s",
    "EZT_REPAIR_AFTER_S": "repair_after_s",
    "EZT_REGION_PROBE_INTERVAL_S": "region_probe_interval_s",
    "EZT_REGION_PROBE_TIMEOUT_S": "region_probe_timeout_s",
}
# Switches: anything but 0, false, no or an empty value turns them on.
_ENV_SWITCH = {
    "EZT_SEND_IDEMPOTENCY_KEY": "send_idempotency_key",
    "EZT_SIMULATE_LATENCY": "simulate_latency",
    "EZT_EDGE_DELIVERS_WEBHOOKS": "edge_delivers_webhooks",
}
_NUMBERS: tuple[tuple[dict[str, str], Callable[[str], float], str], ...] = ((_ENV_INT, int, "an integer"), (_ENV_FLOAT, float, "a number"))


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _list(value: Any, name: str) -> list[str]:
    """A list setting: a YAML list, or a comma/space separated string (env)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p for p in value.replace(",", " ").split() if p]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ConfigError(f"{name} must be a list of strings")


def _urls(value: Any, name: str) -> tuple[str, ...]:
    """Health target URLs: absolute http(s) URLs."""
    out = []
    for item in _list(value, name):
        if not item.startswith(("http://", "https://")) or len(item.split("://", 1)[1]) == 0:
            raise ConfigError(f"{name}: {item!r} is not an http:// or https:// URL")
        out.append(item)
    return tuple(out)


def _cidrs(value: Any, name: str) -> tuple[str, ...]:
    out = []
    for item in _list(value, name):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"{name}: {item!r} is not an address or network (CIDR)") from exc
    return tuple(out)


def _hosts(value: Any, name: str) -> tuple[str, ...]:
    out = []
    for item in _list(value, name):
        host = item.lower().rstrip(".")
        bare = host[2:] if host.startswith("*.") else host
        if not bare or "*" in bare or "/" in bare or ":" in bare:
            raise ConfigError(f"{name}: {item!r} is not a host name or '*.suffix' pattern")
        if bare.replace(".", "").isdigit():
            raise ConfigError(f"{name}: {item!r} is an address; list it in outbound.allow_cidrs")
        out.append(host)
    return tuple(out)


def _ports(value: Any, name: str) -> tuple[int, ...]:
    out = []
    for item in _list([str(v) for v in value] if isinstance(value, list) else value, name):
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise ConfigError(f"{name}: {item!r} is not a port (1-65535)")
        out.append(int(item))
    return tuple(sorted(set(out)))


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_names(value: Any, name: str) -> tuple[str, ...]:
    out = []
    for item in _list(value, name):
        if not _HEADER_NAME.fullmatch(item):
            raise ConfigError(f"{name}: {item!r} is not a header name")
        out.append(item.lower())
    return tuple(out)


def _outbound_and_auth(data: Mapping[str, Any], env: Mapping[str, str], path: Path) -> dict[str, Any]:
    """Outbound allow-lists (regions.yaml ``outbound:``, then env) and failed-auth limits (env)."""
    section = data.get("outbound") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'outbound' must be a mapping")
    unknown = set(section) - {"allow_loopback", "allow_cidrs", "allow_hosts", "allowed_ports", "redirect_sensitive_headers"}
    if unknown:
        raise ConfigError(f"{path}: unknown outbound settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    loopback = env.get("EZT_OUTBOUND_ALLOW_LOOPBACK", section.get("allow_loopback"))
    if loopback is not None:
        values["outbound_allow_loopback"] = _flag(loopback, "outbound.allow_loopback")
    values["outbound_allow_cidrs"] = _cidrs(env.get("EZT_OUTBOUND_ALLOW_CIDRS", section.get("allow_cidrs")), "outbound.allow_cidrs")
    values["outbound_allow_hosts"] = _hosts(env.get("EZT_OUTBOUND_ALLOW_HOSTS", section.get("allow_hosts")), "outbound.allow_hosts")
    values["outbound_allowed_ports"] = _ports(
        env.get("EZT_OUTBOUND_ALLOWED_PORTS", section.get("allowed_ports")), "EZT_OUTBOUND_ALLOWED_PORTS (outbound.allowed_ports)"
    )
    values["redirect_sensitive_headers"] = _header_names(
        env.get("EZT_REDIRECT_SENSITIVE_HEADERS", section.get("redirect_sensitive_headers")),
        "EZT_REDIRECT_SENSITIVE_HEADERS (outbound.redirect_sensitive_headers)",
    )
    values["trusted_proxies"] = _cidrs(env.get("EZT_TRUSTED_PROXIES"), "EZT_TRUSTED_PROXIES")
    for name, attr in (("EZT_AUTH_FAIL_LIMIT", "auth_fail_limit"), ("EZT_AUTH_FAIL_WINDOW_S", "auth_fail_window_s")):
        if name in env:
            try:
                values[attr] = int(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer, got {env[name]!r}") from exc
    if values.get("auth_fail_limit", 0) < 0 or values.get("auth_fail_window_s", 1) < 1:
        raise ConfigError("EZT_AUTH_FAIL_LIMIT must be at least 0 and EZT_AUTH_FAIL_WINDOW_S at least 1")
    return values


def load_settings(
    role: str,
    env: Mapping[str, str] | None = None,
    regions_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build the settings of one process (``role``: edge, coordinator, delivery, admin, local)."""
    env = os.environ if env is None else env
    path = Path(regions_file or env.get("EZT_REGIONS_FILE") or "regions.yaml")
    data = _read_yaml(path)
    regions = _regions_from_yaml(data, path)

    redis_port = int((data.get("redis") or {}).get("port", DEFAULT_REDIS_PORT))
    values: dict[str, Any] = {
        "regions": regions,
        "profile": str(data.get("profile", "local")),
        "coordinator_port": int((data.get("coordinator") or {}).get("port", 8710)),
        "delivery_port": int((data.get("delivery") or {}).get("port", 8720)),
        "embedded_redis_port": redis_port,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
    }
    try:
        values["tiers"] = tiers_from_config(data.get("tiers"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if "default_tier" in data:
        values["default_tier"] = str(data["default_tier"])
        if values["default_tier"] not in values["tiers"]:
            raise ConfigError(f"{path}: default_tier {values['default_tier']!r} is not one of the tiers")
    if "REDIS_URL" in env:
        values["redis_url"] = env["REDIS_URL"]
    if env.get("EZT_SECRETS_KEYS", "").strip():
        try:
            values["secrets_keys"] = parse_keys(env["EZT_SECRETS_KEYS"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if env.get("EZT_INSECURE_PLAINTEXT_SECRETS", "").strip():
        values["insecure_plaintext_secrets"] = _flag(env["EZT_INSECURE_PLAINTEXT_SECRETS"], "EZT_INSECURE_PLAINTEXT_SECRETS")
    if env.get("EZT_OPERATOR_TOKEN", "").strip():
        values["operator_token"] = env["EZT_OPERATOR_TOKEN"].strip()
    if "EZT_PROFILE" in env:
        values["profile"] = env["EZT_PROFILE"]
    if "EZT_HOST" in env:
        values["host"] = env["EZT_HOST"]
    if "EZT_PUBLIC_URL" in env:
        values["public_url"] = env["EZT_PUBLIC_URL"].rstrip("/")
    for table, parse, what in _NUMBERS:
        for name, attr in table.items():
            if name in env:
                try:
                    values[attr] = parse(env[name])
                except ValueError as exc:
                    raise ConfigError(f"{name} must be {what}, got {env[name]!r}") from exc
    for name, attr in _ENV_SWITCH.items():
        if name in env:
            values[attr] = env[name] not in ("0", "false", "no", "")
    values.update(_outbound_and_auth(data, env, path))
    values["health_targets"] = _urls(env.get("EZT_HEALTH_TARGETS", data.get("health_targets")), "health_targets")
    if values.get("region_probe_interval_s", 0.5) <= 0 or values.get("region_probe_timeout_s", 0.75) <= 0:
        raise ConfigError("EZT_REGION_PROBE_INTERVAL_S and EZT_REGION_PROBE_TIMEOUT_S must be above 0")

    region = env.get("EZT_REGION")
    if region is not None and region not in {r.id for r in regions}:
        raise ConfigError(f"EZT_REGION={region!r} is not in {path}")
    values["region"] = region
    values["domains_file"] = env.get("EZT_DOMAINS_FILE") or str(path.parent / "domains.yaml")

    if role == "edge":
        if region is None:
            raise ConfigError("an edge node needs EZT_REGION")
        values.setdefault("port", 0)
        if "port" not in values or values["port"] == 0:
            values["port"] = next(r.port for r in regions if r.id == region)
    elif role == "coordinator" and "port" not in values:
        values["port"] = values["coordinator_port"]
    elif role == "delivery" and "port" not in values:
        values["port"] = values["delivery_port"]

    if not values.get("pacing_default_rps", 2.0) > 0 or not values.get("pacing_max_rps", 100.0) > 0:
        raise ConfigError("EZT_PACING_DEFAULT_RPS and EZT_PACING_MAX_RPS must be above 0")
    if values.get("pacing_default_max_concurrent", 2) < 1 or values.get("pacing_max_concurrent", 64) < 1:
        raise ConfigError("EZT_PACING_DEFAULT_MAX_CONCURRENT and EZT_PACING_MAX_CONCURRENT must be at least 1")
    if values["profile"] not in ("local", "production"):
        raise ConfigError(f"profile must be 'local' or 'production', got {values['profile']!r}")
    if values["profile"] == "production":
        values.setdefault("admission_max_queued_per_customer", PRODUCTION_MAX_QUEUED_PER_CUSTOMER)
        values.setdefault("admission_max_bytes_per_customer", -1)  # common/storage.py AUTO
    if values.get("partitions", 1) < 1:
        raise ConfigError("EZT_PARTITIONS must be at least 1")
    if values.get("admission_max_queued_per_customer", 0) < 0:
        raise ConfigError("EZT_ADMISSION_MAX_QUEUED_PER_CUSTOMER must be at least 0 (0: no ceiling)")
    if values.get("admission_max_bytes_per_customer", 0) < 0 and values.get("admission_max_bytes_per_customer") != -1:
        raise ConfigError("EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER must be at least 0 (0: no budget)")
    if values.get("max_batch_jobs", 100) < 1:
        raise ConfigError("EZT_MAX_BATCH_JOBS must be at least 1")
    if values.get("schedules_max_per_customer", 100) < 0:
        raise ConfigError("EZT_SCHEDULES_MAX_PER_CUSTOMER must be at least 0")
    if values.get("edge_workers", 0) < 0 or values.get("delivery_workers", 0) < 0:
        raise ConfigError("EZT_EDGE_WORKERS and EZT_DELIVERY_WORKERS must be at least 1 (0 or unset: one per core)")
    if env.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        values["metrics_multiproc_dir"] = env["PROMETHEUS_MULTIPROC_DIR"].strip()
    if values.get("bulk_max_running_per_customer", 4) < 1 or values.get("bulk_lease_s", 10.0) <= 0:
        raise ConfigError("EZT_BULK_MAX_RUNNING_PER_CUSTOMER must be at least 1 and EZT_BULK_LEASE_S above 0")

    default_node = f"{role}-{region + '-' if region else ''}{socket.gethostname()}-{os.getpid()}"
    values["node_id"] = env.get("EZT_NODE_ID") or default_node
    return Settings(**values)

"""Settings, built once at start from `regions.yaml`, the environment and defaults.

Order of precedence (later wins): defaults < regions.yaml < environment.
No other module reads ``os.environ``: processes call :func:`load_settings`
once and pass the frozen result down.

Environment variables (all optional):

====================================  =========================================
``EZT_REGIONS_FILE``                  path to regions.yaml (default: ./regions.yaml)
``EZT_PROFILE``                       ``local`` (loopback targets allowed) or ``production``
``REDIS_URL``                         Redis to use (default: the embedded one's port)
``EZT_REGION``                        this edge's region id
``EZT_NODE_ID``                       this process's node id (default: role-region-pid)
``EZT_HOST`` / ``EZT_PORT``           listen address of this process's HTTP server
``EZT_PUBLIC_URL``                    how clients reach this node (default http://host:port)
``EZT_MAX_BODY_BYTES``                request body limit of the public API (413 above)
``EZT_IDEMPOTENCY_TTL_S``             how long an idempotent key deduplicates
``EZT_JOB_TTL_S``                     how long a finished job stays readable
``EZT_VISIBILITY_TIMEOUT_MS``         idle time after which a dead node's jobs are reclaimed
``EZT_ATTEMPT_TIMEOUT_S``             per-attempt outbound timeout
``EZT_RETRY_BACKOFF_BASE_S``          first retry's backoff ceiling (full jitter, doubling)
``EZT_RETRY_BACKOFF_CAP_S``           largest backoff between retries
``EZT_RESPONSE_BODY_CAP_BYTES``       stored response bodies are cut (and marked) above this
``EZT_EXECUTOR_CONCURRENCY``          outbound attempts in flight per edge node
``EZT_PARTITIONS``                    number of job partitions (hash slots on a cluster)
``EZT_REGION_SILENT_AFTER_MS``        a region with no heartbeat for this long is down
``EZT_REGION_RECOVER_AFTER_MS``       sustained health needed before a region is up again
``EZT_SIMULATE_LATENCY``              ``1``/``0``: add regions.yaml latency to outbound sends
``EZT_DELIVERY_TIMEOUT_S``            per-attempt timeout of a webhook POST
``EZT_DELIVERY_BACKOFF_BASE_S``       first webhook retry's delay ceiling (doubling, equal jitter)
``EZT_DELIVERY_BACKOFF_CAP_S``        largest delay between webhook retries
``EZT_DELIVERY_WINDOW_S``             how long a webhook is retried before it is dead-lettered
``EZT_DELIVERY_CONCURRENCY``          webhook POSTs in flight per delivery worker
``EZT_DELIVERY_POLL_S``               how often a delivery worker releases due retries
====================================  =========================================
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_REDIS_PORT = 6390


class ConfigError(ValueError):
    """The configuration is unusable; the message names the setting."""


@dataclass(frozen=True)
class RegionConfig:
    id: str
    port: int
    latency_mean_ms: float = 0.0
    latency_jitter_ms: float = 0.0


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
    idempotency_ttl_s: int = 24 * 3600
    job_ttl_s: int = 7 * 24 * 3600
    visibility_timeout_ms: int = 30_000
    attempt_timeout_s: float = 30.0
    retry_backoff_base_s: float = 0.5
    retry_backoff_cap_s: float = 30.0
    response_body_cap_bytes: int = 1024 * 1024
    executor_concurrency: int = 256
    read_batch: int = 64
    partitions: int = 1
    simulate_latency: bool = True
    api_key_cache_s: float = 2.0
    region_silent_after_ms: int = 2500
    region_recover_after_ms: int = 5000
    delivery_timeout_s: float = 10.0
    delivery_backoff_base_s: float = 10.0
    delivery_backoff_cap_s: float = 3600.0
    delivery_window_s: float = 24 * 3600.0
    delivery_concurrency: int = 64
    delivery_poll_s: float = 0.1
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def region_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.regions)

    def region_config(self, region_id: str) -> RegionConfig:
        for r in self.regions:
            if r.id == region_id:
                return r
        raise ConfigError(f"unknown region {region_id!r}; regions.yaml has {', '.join(self.region_ids)}")

    @property
    def allow_loopback_targets(self) -> bool:
        """The local profile sends to loopback targets; production refuses them."""
        return self.profile == "local"

    @property
    def advertised_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


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
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: regions[{i}] ({rid}) needs an integer 'port' and numeric latency") from exc
    return tuple(regions)


_ENV_INT = {
    "EZT_MAX_BODY_BYTES": "max_body_bytes",
    "EZT_IDEMPOTENCY_TTL_S": "idempotency_ttl_s",
    "EZT_JOB_TTL_S": "job_ttl_s",
    "EZT_VISIBILITY_TIMEOUT_MS": "visibility_timeout_ms",
    "EZT_RESPONSE_BODY_CAP_BYTES": "response_body_cap_bytes",
    "EZT_EXECUTOR_CONCURRENCY": "executor_concurrency",
    "EZT_PARTITIONS": "partitions",
    "EZT_DELIVERY_CONCURRENCY": "delivery_concurrency",
    "EZT_PORT": "port",
    "EZT_REGION_SILENT_AFTER_MS": "region_silent_after_ms",
    "EZT_REGION_RECOVER_AFTER_MS": "region_recover_after_ms",
}
_ENV_FLOAT = {
    "EZT_ATTEMPT_TIMEOUT_S": "attempt_timeout_s",
    "EZT_RETRY_BACKOFF_BASE_S": "retry_backoff_base_s",
    "EZT_RETRY_BACKOFF_CAP_S": "retry_backoff_cap_s",
    "EZT_DELIVERY_TIMEOUT_S": "delivery_timeout_s",
    "EZT_DELIVERY_BACKOFF_BASE_S": "delivery_backoff_base_s",
    "EZT_DELIVERY_BACKOFF_CAP_S": "delivery_backoff_cap_s",
    "EZT_DELIVERY_WINDOW_S": "delivery_window_s",
    "EZT_DELIVERY_POLL_S": "delivery_poll_s",
}


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
    if "REDIS_URL" in env:
        values["redis_url"] = env["REDIS_URL"]
    if "EZT_PROFILE" in env:
        values["profile"] = env["EZT_PROFILE"]
    if "EZT_HOST" in env:
        values["host"] = env["EZT_HOST"]
    if "EZT_PUBLIC_URL" in env:
        values["public_url"] = env["EZT_PUBLIC_URL"].rstrip("/")
    for name, attr in _ENV_INT.items():
        if name in env:
            try:
                values[attr] = int(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer, got {env[name]!r}") from exc
    for name, attr in _ENV_FLOAT.items():
        if name in env:
            try:
                values[attr] = float(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name} must be a number, got {env[name]!r}") from exc
    if "EZT_SIMULATE_LATENCY" in env:
        values["simulate_latency"] = env["EZT_SIMULATE_LATENCY"] not in ("0", "false", "no", "")

    region = env.get("EZT_REGION")
    if region is not None and region not in {r.id for r in regions}:
        raise ConfigError(f"EZT_REGION={region!r} is not in {path}")
    values["region"] = region

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

    if values["profile"] not in ("local", "production"):
        raise ConfigError(f"profile must be 'local' or 'production', got {values['profile']!r}")
    if values.get("partitions", 1) < 1:
        raise ConfigError("EZT_PARTITIONS must be at least 1")

    default_node = f"{role}-{region + '-' if region else ''}{socket.gethostname()}-{os.getpid()}"
    values["node_id"] = env.get("EZT_NODE_ID") or default_node
    return Settings(**values)

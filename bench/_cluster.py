"""Our cluster as real processes, a sink (target + webhook receiver), and small helpers.

:func:`cluster` starts what ``make up-local`` starts: a throwaway Redis, a
coordinator, a delivery service and edges (one per region asked for), each
its own process on loopback, plus :mod:`bench.sink`. The sink's domain gets
its limits raised through a ``domains.yaml`` the coordinator applies, the way
an operator would (the default, 2 requests/s, would make every throughput
number a pacing number).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ._procs import REPO, create_key, edge_env, free_port, redis_server, service

RESULTS = REPO / "bench" / "results"

# Limits for the sink's domain: far above anything one machine can send.
RAISED = {"rps": 100000, "max_rps": 100000, "max_concurrent": 1024, "max_concurrent_ceiling": 1024}


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary_ms(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50": round(percentile(values_ms, 50), 3),
        "p90": round(percentile(values_ms, 90), 3),
        "p99": round(percentile(values_ms, 99), 3),
        "max": round(max(values_ms), 3) if values_ms else float("nan"),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return out


@contextlib.contextmanager
def sink_process(tag: str, pids: dict[str, int] | None = None) -> Iterator[str]:
    port = free_port()
    with service("bench.sink", {"EZT_PORT": str(port)}, f"http://127.0.0.1:{port}/readyz", f"{tag}-sink") as proc:
        if pids is not None:
            pids["sink"] = proc.pid
        yield f"http://127.0.0.1:{port}"


@dataclass
class Cluster:
    redis_url: str
    sink: str
    edges: dict[str, str] = field(default_factory=dict)  # region -> base URL
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid, for CPU accounting


def _tree(pid: int, skip: frozenset[int] = frozenset()) -> list[int]:
    """The process and its live descendants (a supervisor's worker processes, EZT_EDGE_WORKERS), not entering ``skip``."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return [pid, *(p for child in children if child not in skip for p in _tree(child, skip))]


def cpu_s(pid: int, skip: frozenset[int] = frozenset()) -> float:
    """CPU time (user + system, s) a process and its live descendants but ``skip``'s have used so far; 0 if it is gone."""
    total = 0
    for p in _tree(pid, skip):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    listed = frozenset(pids.values())  # the driver's descendants are the services, each counted on its own
    return {name: cpu_s(pid, listed - {pid}) for name, pid in pids.items()}


def redis_pid(redis_url: str) -> int:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        return int(r.info("server")["process_id"])


@contextlib.contextmanager
def cluster(
    tag: str,
    regions: tuple[str, ...] = ("iad",),
    *,
    delivery: bool = True,
    simulate_latency: bool = False,
    sink: str | None = None,
    extra_env: dict[str, str] | None = None,
    redis: tuple[str, dict[str, int]] | None = None,
) -> Iterator[Cluster]:
    """Redis, coordinator, delivery and one edge per region, with the sink's domain raised.

    ``redis``: a Redis (or Redis Cluster) already running, as (URL, {name: pid}),
    instead of a throwaway server of our own.
    """
    with contextlib.ExitStack() as stack:
        if redis is None:
            redis_url = stack.enter_context(redis_server())
            pids = {"redis": redis_pid(redis_url)}
        else:
            redis_url, pids = redis[0], dict(redis[1])
        sink_url = sink or stack.enter_context(sink_process(tag, pids))
        host_port = sink_url.split("://", 1)[1]
        domains = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ezt-bench-"))) / "domains.yaml"
        domains.write_text(f'domains:\n  "{host_port}": {orjson.dumps(RAISED).decode()}\n')
        base = {
            "REDIS_URL": redis_url,
            "EZT_REGIONS_FILE": str(REPO / "regions.yaml"),
            "EZT_DOMAINS_FILE": str(domains),
            "EZT_SIMULATE_LATENCY": "1" if simulate_latency else "0",
            # Every webhook goes to the sink's one host: raise its webhook pace (50/s by default, all
            # customers together) as an operator whose receivers take that much would, or every
            # throughput number would be that pace.
            "EZT_DELIVERY_HOST_RPS": "100000",
            "EZT_DELIVERY_HOST_BURST": "1000",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        port = free_port()
        pids["coordinator"] = stack.enter_context(
            service(
                "ezthrottle_server.coordinator",
                {**base, "EZT_PORT": str(port), "EZT_NODE_ID": f"bench-coordinator-{tag}"},
                f"http://127.0.0.1:{port}/readyz",
                f"{tag}-coordinator",
            )
        ).pid
        if delivery:
            port = free_port()
            pids["delivery"] = stack.enter_context(
                service(
                    "ezthrottle_server.delivery",
                    {**base, "EZT_PORT": str(port), "EZT_NODE_ID": f"bench-delivery-{tag}"},
                    f"http://127.0.0.1:{port}/readyz",
                    f"{tag}-delivery",
                )
            ).pid
        c = Cluster(redis_url, sink_url, pids=pids)
        for region in regions:
            port = free_port()
            env = {**edge_env(redis_url, region, port), **base}
            edge = stack.enter_context(service("ezthrottle_server.edge", env, f"http://127.0.0.1:{port}/readyz", f"{tag}-edge-{region}"))
            c.pids[f"edge-{region}"] = edge.pid
            c.edges[region] = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_for_override(redis_url, host_port))
        yield c


async def _wait_for_override(redis_url: str, host_port: str, timeout_s: float = 15.0) -> None:
    """The coordinator applies domains.yaml shortly after it takes the lease."""
    from ezthrottle_server.common import keys
    from ezthrottle_server.common.redisconn import connect
    from ezthrottle_server.pacing.scope import parse_domain

    r = connect(redis_url)
    try:
        key = keys.pacing_conf(parse_domain(host_port))
        deadline = time.monotonic() + timeout_s
        while not await r.hget(key, "rps"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the coordinator did not apply the bench domains.yaml within {timeout_s}s")
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()


async def new_key(redis_url: str, customer: str = "bench", webhook_secret: str | None = "bench-webhook-secret-0123456789") -> str:
    """An uncapped API key; with a webhook secret, so deliveries are signed as in production."""
    key = await create_key(redis_url, customer)
    if webhook_secret:
        from ezthrottle_server.common import keys
        from ezthrottle_server.common.redisconn import connect

        r = connect(redis_url)
        try:
            await r.hset(keys.webhook_secrets(customer), mapping={"primary": webhook_secret})
        finally:
            await r.aclose()
    return key


async def submit(http: aiohttp.ClientSession, edge: str, key: str, payload: bytes, *, max_tries: int = 50) -> dict[str, Any]:
    """POST a job; 429/503 are retried after their Retry-After (bounded), anything else raises."""
    last = ""
    for _ in range(max_tries):
        async with http.post(
            f"{edge}/api/v1/jobs", data=payload, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        ) as resp:
            body = await resp.read()
            if resp.status in (200, 201):
                return orjson.loads(body)
            if resp.status not in (429, 503):
                raise RuntimeError(f"submit failed: {resp.status} {body[:300]!r}")
            last = f"{resp.status} {body[:300]!r}"
            await asyncio.sleep(min(float(resp.headers.get("Retry-After", "0.1") or 0.1), 2.0))
    raise RuntimeError(f"submit kept being refused: {last}")


async def submit_jobs(http: aiohttp.ClientSession, edge: str, key: str, jobs: list[dict[str, Any]], *, max_tries: int = 50) -> list[str]:
    """POST /api/v1/jobs/batch; each job's id, in order. A refusal as a whole (429/503) and jobs refused
    at acceptance (overloaded, unavailable) are retried after their Retry-After (bounded); anything else raises."""
    ids: list[str | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    last = ""
    for _ in range(max_tries):
        body = orjson.dumps({"jobs": [jobs[i] for i in pending]})
        async with http.post(
            f"{edge}/api/v1/jobs/batch", data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        ) as resp:
            raw = await resp.read()
            if resp.status not in (200, 429, 503):
                raise RuntimeError(f"batch submit failed: {resp.status} {raw[:300]!r}")
            wait_s = min(float(resp.headers.get("Retry-After", "0.1") or 0.1), 2.0)
        if resp.status != 200:
            last = f"{resp.status} {raw[:300]!r}"
            await asyncio.sleep(wait_s)
            continue
        again = []
        for i, result in zip(pending, orjson.loads(raw)["jobs"]):
            if "job_id" in result:
                ids[i] = result["job_id"]
            elif result["error"]["code"] in ("overloaded", "unavailable"):
                again.append(i)
                wait_s = min(float(result["error"].get("retry_after_s", 0.1)), 2.0)
            else:
                raise RuntimeError(f"batch submit: job refused: {result}")
        if not again:
            return [job_id for job_id in ids if job_id is not None]
        pending, last = again, f"{len(again)} jobs refused"
        await asyncio.sleep(wait_s)
    raise RuntimeError(f"batch submit kept being refused: {last}")


async def sink_get(http: aiohttp.ClientSession, sink: str, what: str) -> dict[str, Any]:
    async with http.get(f"{sink}/{what}") as resp:
        return orjson.loads(await resp.read())


async def sink_reset(http: aiohttp.ClientSession, sink: str) -> None:
    async with http.post(f"{sink}/reset") as resp:
        await resp.read()


async def wait_hooks(http: aiohttp.ClientSession, sink: str, n: int, timeout_s: float, what: str = "hooks") -> int:
    """Wait until the sink has ``n`` distinct webhooks (or target hits); returns how many arrived."""
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        got = (await sink_get(http, sink, "stats"))[what]
        if got >= n:
            return got
        await asyncio.sleep(0.02)
    return got

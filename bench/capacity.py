"""The capacity model's inputs, and one point of it checked on a Redis Cluster.

    python -m bench.capacity [--quick] [--jobs 3000] [--masters 3] [--edges 2]

1. **Calibrate** (one Redis server, one edge, coordinator, delivery): the
   e2e workload of :mod:`bench.e2e` (a POST with a 200-byte body to a loopback
   target, one signed webhook), and the same jobs against a target that answers
   503 to each job's first request (two attempts per job). From the CPU time
   each process used: microseconds per job (one attempt, one webhook) and per
   extra attempt, per component (edge, delivery, coordinator, Redis). A third
   run times every Redis command (its slowlog, threshold 0) and names each
   script by its sha: Redis's time per job by script, which says what one hot
   domain's pacing scripts cost the master that holds it.
2. **Predict** the check point: on this machine every process shares the same
   cores, so the model's throughput is ``cores x busy share / sum of the CPU
   per job`` of every process on it (the load generator and the sink too),
   with the busy share of the calibration run (the model can say what the work
   costs, not how well the OS packs it).
3. **Check** it: the same workload on a ``--masters`` Redis Cluster
   (``redis+cluster://``, ``EZT_PARTITIONS`` = 4 x masters) with ``--edges``
   edges, jobs spread over them. Reported: predicted against measured jobs/s,
   and each component's CPU per job on the cluster against the calibration.

``docs/capacity.md`` turns these numbers into sizing rules for many machines.
Results: bench/results/capacity.json. Everything runs on loopback and every
wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from ._cluster import cluster, new_key, sink_get, submit, write_result
from ._procs import REPO
from .e2e import drive, job_spec, warm_up

COMPONENTS = ("edge", "delivery", "coordinator", "redis")


def _job(sink: str, tag: str, route: str) -> bytes:
    # A 503 is retried after a short backoff; no reroute, so the attempt stays in its region.
    retry = {"max_retries": 2, "max_reroutes": 0, "retry_codes": [503]}
    return orjson.dumps({**job_spec(sink, tag, route), "retry_policy": retry})


def _script_names() -> dict[str, str]:
    """sha1 of each script's source (as EVALSHA names it) -> ``area/name``."""
    import hashlib

    from ezthrottle_server.common import scripting

    root = REPO / "services" / "ezthrottle_server"
    names = [f"{area}/{f.stem}" for area in ("common", "pacing") for f in sorted((root / area / "scripts").glob("[!_]*.lua"))]
    return {hashlib.sha1(scripting.source(n).encode()).hexdigest(): n for n in names}


def _timing_on(redis_url: str) -> None:
    """Redis times every command into its slowlog (threshold 0) from now on, cleared."""
    import redis

    with redis.Redis.from_url(redis_url) as r:
        r.config_set("slowlog-max-len", 2_000_000)
        r.config_set("slowlog-log-slower-than", 0)
        r.slowlog_reset()


def _redis_time_by_command(redis_url: str, jobs: int) -> dict[str, float]:
    """µs of Redis time per job by script (EVALSHA's sha named) or command, from the slowlog; timing off again."""
    import redis

    names = _script_names()
    with redis.Redis.from_url(redis_url) as r:
        entries = r.execute_command("SLOWLOG", "GET", -1)
        r.config_set("slowlog-log-slower-than", 10_000)
    total: dict[str, int] = {}
    for entry in entries:
        args = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in entry[3]]
        name = args[0].upper() if args else "?"
        if name in ("EVALSHA", "EVAL") and len(args) > 1:
            name = names.get(args[1], "script " + args[1][:8])
        total[name] = total.get(name, 0) + int(entry[2])
    return {k: round(v / max(jobs, 1), 1) for k, v in sorted(total.items(), key=lambda kv: -kv[1]) if v / max(jobs, 1) >= 0.5}


def _by_component(cpu: dict[str, int]) -> dict[str, int]:
    """Per-process µs per job summed by component (``edge-iad`` + ``edge-lax`` -> ``edge``; Redis masters -> ``redis``)."""
    out = dict.fromkeys(COMPONENTS, 0)
    out["load"] = 0  # the load generator and the sink: on this machine, they share the cores too
    for name, us in cpu.items():
        part = name.split("-", 1)[0]
        out[part if part in out else "load"] += us
    return out


async def _run(
    edges: list[str], redis_url: str, sink: str, n: int, concurrency: int, route: str, pids: dict[str, int], timed: bool = False
) -> dict[str, Any]:
    key = await new_key(redis_url)
    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, tag: str) -> None:
            await submit(http, edges[i % len(edges)], key, _job(sink, tag, route))

        await warm_up(http, sink, one, concurrency)
        if timed:
            _timing_on(redis_url)
        result = await drive(http, sink, one, n, concurrency, "run", 300, pids)
        if timed:
            result["redis_us_per_job_by_command"] = _redis_time_by_command(redis_url, n)
        result["target_requests_per_job"] = round((await sink_get(http, sink, "stats"))["target_requests"] / max(n, 1), 3)
    result["cpu_us_per_job_by_component"] = _by_component(result["cpu_us_per_job"])
    return result


@contextmanager
def _redis_cluster(masters: int) -> Iterator[tuple[str, dict[str, int]]]:
    """A ``masters``-node Redis Cluster (tests/support's launcher: the one the cluster tests use)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.redis_cluster import redis_cluster

    with redis_cluster(masters=masters) as c:
        yield c.url, {f"redis-{port}": proc.pid for port, proc in c.procs.items()}


def calibrate(n: int, concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for route in ("t", "f"):  # one attempt per job; two
        with cluster(f"capacity-{route}", ("iad",)) as c:
            out[route] = asyncio.run(_run(list(c.edges.values()), c.redis_url, c.sink, n, concurrency, route, c.pids))
    with cluster("capacity-timed", ("iad",)) as c:  # a separate run: timing every command costs Redis some CPU
        timed = asyncio.run(_run(list(c.edges.values()), c.redis_url, c.sink, n, concurrency, "t", c.pids, timed=True))
    one, two = out["t"]["cpu_us_per_job_by_component"], out["f"]["cpu_us_per_job_by_component"]
    extra = out["f"]["target_requests_per_job"] - out["t"]["target_requests_per_job"]
    return {
        "one_attempt": out["t"],
        "two_attempts": out["f"],
        "us_per_job": one,
        "us_per_extra_attempt": {k: round((two[k] - one[k]) / extra) if extra > 0 else None for k in one},
        # Redis's own time inside each command (its slowlog): what a hot domain's scripts cost one master
        "redis_us_per_job_by_command": timed["redis_us_per_job_by_command"],
    }


def predict(us_per_job: dict[str, int], busy_share: float, cores: int) -> dict[str, Any]:
    total = sum(us_per_job.values())
    return {
        "jobs_per_s_this_machine": round(cores * busy_share * 1e6 / max(total, 1), 1),
        "jobs_per_s_per_core": {k: round(1e6 / v, 1) for k, v in us_per_job.items() if v > 0},
        "us_per_job_total": total,
    }


def check(n: int, concurrency: int, masters: int, edges: int) -> dict[str, Any]:
    regions = ("iad", "lax", "ord")[: max(1, min(edges, 3))]
    with _redis_cluster(masters) as redis:
        env = {"EZT_PARTITIONS": str(4 * masters)}
        with cluster("capacity-cluster", regions, redis=redis, extra_env=env) as c:
            return asyncio.run(_run(list(c.edges.values()), c.redis_url, c.sink, n, concurrency, "t", c.pids))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,500 jobs per run")
    p.add_argument("--jobs", type=int, default=5_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--masters", type=int, default=3)
    p.add_argument("--edges", type=int, default=2)
    a = p.parse_args(argv)
    n = 1500 if a.quick else a.jobs
    cores = os.cpu_count() or 1
    cal = calibrate(n, a.concurrency)
    model = predict(cal["us_per_job"], cal["one_attempt"]["cpu_busy_share"], cores)
    got = check(n, a.concurrency, a.masters, a.edges)
    measured = got["jobs_per_s"] or 0.0
    error = round(measured / model["jobs_per_s_this_machine"] - 1, 3) if model["jobs_per_s_this_machine"] else None
    result = {
        "scenario": "capacity",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jobs": n,
        "cores": cores,
        "calibration": cal,
        "model": model,
        "check": {
            "setup": f"{a.masters}-master Redis Cluster, {a.edges} edge(s), coordinator, delivery",
            "run": got,
            "predicted_jobs_per_s": model["jobs_per_s_this_machine"],
            "measured_jobs_per_s": measured,
            "measured_over_predicted_minus_1": error,
        },
    }
    print(f"  µs per job (1 attempt, 1 webhook):  {cal['us_per_job']}")
    print(f"  µs per extra attempt:               {cal['us_per_extra_attempt']}")
    print(f"  jobs/s per core of each component:  {model['jobs_per_s_per_core']}")
    print(f"  Redis µs per job by command:        {cal['redis_us_per_job_by_command']}")
    print(f"  cluster µs per job:                 {got['cpu_us_per_job_by_component']}")
    print(f"  cluster µs per job, each process:   {got['cpu_us_per_job']}")
    print(
        f"  {a.masters}-master cluster, {a.edges} edges: predicted {model['jobs_per_s_this_machine']} jobs/s,"
        f" measured {measured} ({error:+.1%})"
        if error is not None
        else "  no prediction"
    )
    out = write_result("capacity", result)
    print(f"written to {out.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()

"""Redis memory per queued job, with a 200-byte body.

    python -m bench.memory [--quick] [--jobs 100000]

One edge and a throwaway Redis (no coordinator, so nothing moves the jobs).
The load generator (:mod:`bench.loadgen`, its own process) posts ``--jobs``
jobs through the public API: POST, a 200-byte body, a fresh idempotent key
each, ``retry_at`` an hour ahead, so every job stays queued (record,
idempotency key, delayed-set entry) for the whole measurement. A warm-up of
1,000 jobs first creates what does not grow with the job count (streams,
counters, scripts). Reported: ``used_memory`` delta / jobs, and the keys of
one job as ``MEMORY USAGE`` sees them.

The issue asks for 1,000,000 jobs or fewer scaled up: per-job memory is
linear here (every structure involved is a hash table or skiplist past a
few hundred entries), so 100,000 (10,000 with ``--quick``) gives the
same bytes per job. Measured twice: with Redis as ``make up-local`` and the
compose file run it (``hash-max-ziplist-value 4096``, so a job record keeps
the compact hash encoding), and with Redis's defaults. Goal: <= 1.5 KB per
job. Results: bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson

from ._cluster import new_key, write_result
from ._procs import REPO, edge_env, free_port, redis_server, service

WARMUP = 1000


def _post(url: str, key: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--key",
            key,
            "--concurrency",
            "32",
            "--duration",
            "600",
            "--max-requests",
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=660,
    )
    return orjson.loads(out.stdout)


def _used(redis_url: str) -> int:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        return int(r.info("memory")["used_memory"])


async def _one_job(redis_url: str) -> dict[str, Any]:
    """MEMORY USAGE of one queued job's keys, and the delayed set's share per member."""
    from ezthrottle_server.common import keys
    from ezthrottle_server.common.redisconn import connect

    r = connect(redis_url)
    try:
        delayed = keys.delayed(0)
        members = await r.zrange(delayed, 0, 0)
        if not members:
            return {}
        job_id = members[0].split("|", 1)[1]
        record = await r.hgetall(keys.job(job_id))
        idem = None
        async for k in r.scan_iter(match=f"*{keys.partition_tag(0)}:idem:*", count=1000):
            if await r.get(k) == job_id:
                idem = k
                break
        zcard = await r.zcard(delayed)
        return {
            "job_record_bytes": await r.memory_usage(keys.job(job_id), samples=0),
            "job_record_fields": len(record),
            "job_record_spec_bytes": len(record.get("spec", "")),
            "idempotency_key_bytes": await r.memory_usage(idem, samples=0) if idem else None,
            "delayed_set_bytes_per_member": round((await r.memory_usage(delayed, samples=0) or 0) / max(zcard, 1), 1),
        }
    finally:
        await r.aclose()


def _measure(n: int, redis_args: list[str]) -> dict[str, Any]:
    with redis_server(redis_args) as redis_url:
        key = asyncio.run(new_key(redis_url, webhook_secret=None))
        port = free_port()
        with service("ezthrottle_server.edge", edge_env(redis_url, "iad", port), f"http://127.0.0.1:{port}/readyz", "memory-edge"):
            url = f"http://127.0.0.1:{port}"
            warm = _post(url, key, WARMUP)
            before = _used(redis_url)
            load = _post(url, key, n)
            after = _used(redis_url)
            one = asyncio.run(_one_job(redis_url))
    accepted = int(load["accepted"])
    return {
        "redis_args": redis_args,
        "jobs": n,
        "accepted": accepted,
        "warmup_accepted": warm["accepted"],
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_job": round((after - before) / max(accepted, 1), 1),
        "one_job": one,
        "submit_rate_per_s": load["accepted_per_s"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ezthrottle_server.devcluster.cluster import REDIS_MEMORY_ARGS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10,000 jobs")
    p.add_argument("--jobs", type=int, default=100_000)
    a = p.parse_args(argv)
    n = 10_000 if a.quick else a.jobs
    tuned = _measure(n, list(REDIS_MEMORY_ARGS))
    default = _measure(n, [])
    result = {
        "scenario": "memory",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "jobs": n,
        "accepted": tuned["accepted"],
        "bytes_per_job": tuned["bytes_per_job"],
        "as_make_up_local_runs_redis": tuned,
        "redis_defaults": default,
        "goal": "<= 1536 bytes per queued job",
    }
    out = write_result("memory", result)
    for label, r in (("as `make up-local` runs Redis", tuned), ("Redis defaults", default)):
        print(f"  {label:<31} {r['accepted']} jobs queued: {r['bytes_per_job']:>7,.0f} bytes/job; one job: {r['one_job']}")
    print(f"goal <= 1,536 bytes/job; written to {out.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()

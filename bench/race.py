"""Race latency across regions (issue 4's benchmark).

    python -m bench.race [--quick] [--jobs 200]

Three edges (iad, lax, ord), a coordinator and Redis as real processes, with
regions.yaml's simulated outbound latency on (iad 20 ms, lax 80 ms, ord
50 ms, each with jitter); the target is a loopback GET whose domain has its
limits raised. The driver submits, two at a time with 25 ms pauses (light
load: a raced job costs three regions' work), first ``--jobs`` jobs that
run in iad only (the fastest single region), then as many raced in all three
(``regions: [iad, lax, ord]``, ``execution_mode: race``).

Latency is the job's own record: ``finished_ms - created_ms``, from accept
to the winner's claim. Reported: p50/p99 of each, the race's p50 minus the
fastest region's (goal <= 10 ms), and who won how often. Results:
bench/results/race.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson

from ._cluster import cluster, new_key, submit, summary_ms, write_result
from ._procs import REPO

REGIONS = ("iad", "lax", "ord")
CONCURRENCY = 2  # submitters, each pausing GAP_S between jobs: light load (a raced job is three sends)
GAP_S = 0.025


async def _phase(http: aiohttp.ClientSession, edge: str, key: str, sink: str, regions: list[str], jobs: int, tag: str) -> list[str]:
    ids: list[str] = []
    next_i = 0

    async def submitter() -> None:
        nonlocal next_i
        while next_i < jobs:
            i = next_i
            next_i += 1
            payload = orjson.dumps({"url": f"{sink}/t/{tag}-{i}", "method": "GET", "regions": regions, "idempotent_key": f"{tag}-{i}"})
            ids.append((await submit(http, edge, key, payload))["job_id"])
            await asyncio.sleep(GAP_S)

    await asyncio.gather(*(submitter() for _ in range(CONCURRENCY)))
    return ids


async def _outcomes(redis_url: str, ids: list[str], timeout_s: float = 60.0) -> list[tuple[int, str | None, str | None]]:
    """(finished - created ms, winner, state) of each job, once every job is final."""
    from ezthrottle_server.common import keys
    from ezthrottle_server.common.redisconn import connect

    r = connect(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            async with r.pipeline(transaction=False) as pipe:
                for j in ids:
                    pipe.hmget(keys.job(j), "created_ms", "finished_ms", "winner", "state")
                rows = await pipe.execute()
            if all(row[3] in ("success", "failed") for row in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()
    return [(int(f) - int(c), w, s) for c, f, w, s in rows if c and f]


async def _run(edge: str, redis_url: str, sink: str, jobs: int) -> dict[str, Any]:
    key = await new_key(redis_url, webhook_secret=None)
    async with aiohttp.ClientSession() as http:
        await _phase(http, edge, key, sink, ["iad"], 20, "warm")
        single_ids = await _phase(http, edge, key, sink, ["iad"], jobs, "single")
        single = await _outcomes(redis_url, single_ids)
        race_ids = await _phase(http, edge, key, sink, list(REGIONS), jobs, "race")
        race = await _outcomes(redis_url, race_ids)
    single_ms = summary_ms([float(ms) for ms, _, _ in single])
    race_ms = summary_ms([float(ms) for ms, _, _ in race])
    return {
        "jobs_per_phase": jobs,
        "fastest_single_region_iad_ms": single_ms,
        "race_iad_lax_ord_ms": race_ms,
        "race_p50_minus_fastest_p50_ms": round(race_ms["p50"] - single_ms["p50"], 3),
        "race_p99_minus_fastest_p99_ms": round(race_ms["p99"] - single_ms["p99"], 3),
        "winners": dict(Counter(w or "none" for _, w, _ in race).most_common()),
        "race_states": dict(Counter(s for _, _, s in race)),
        "single_states": dict(Counter(s for _, _, s in single)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 jobs per phase")
    p.add_argument("--jobs", type=int, default=300)
    a = p.parse_args(argv)
    jobs = 100 if a.quick else a.jobs
    with cluster("race", REGIONS, delivery=False, simulate_latency=True) as c:
        measured = asyncio.run(_run(c.edges["iad"], c.redis_url, c.sink, jobs))
    result = {
        "scenario": "race",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "simulated_latency_ms": {"iad": 20, "lax": 80, "ord": 50},
        **measured,
        "goal": "race p50 <= fastest single region p50 + 10 ms",
    }
    out = write_result("race", result)
    s, r = measured["fastest_single_region_iad_ms"], measured["race_iad_lax_ord_ms"]
    print(f"  iad only          p50 {s['p50']:>6} ms  p99 {s['p99']:>6} ms")
    print(
        f"  race iad/lax/ord  p50 {r['p50']:>6} ms  p99 {r['p99']:>6} ms"
        f"  (p50 +{measured['race_p50_minus_fastest_p50_ms']} ms; goal <= +10)"
    )
    print(f"  winners {measured['winners']}; written to {out.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()

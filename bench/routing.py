"""Routing latency: from accept to the start of the outbound send, at light load.

    python -m bench.routing [--quick] [--jobs 300] [--gap-ms 20]

One edge (iad), a coordinator and Redis as real processes; simulated region
latency off; the target's domain has its limits raised. The driver submits
GET jobs one at a time, ``--gap-ms`` apart, and the sink records when each
request reached the target (``time.time()``; every process shares the
machine's clock).

Reported:

- **accept → send** (the goal's measure), from the edge's own histogram
  ``ezt_accept_to_send_seconds``: for each job the accepting edge sent at
  once (the fast path, ``pacing/scripts/take.lua``), the time from
  ``submit.lua``'s answer (the job durable) to the start of its send, on one
  clock (``perf_counter``). Percentiles interpolated within the histogram's
  buckets (0.1 ms wide up to 0.5 ms); the share of jobs that took the fast
  path is printed beside it.
- **created → target** (stricter, end to end inside our system): the
  target's arrival time minus the job record's ``created_ms``, taken in the
  API handler before the take and ``submit.lua`` round trips; whole
  milliseconds (truncated), so it reads up to 1 ms high, and it includes the
  HTTP request to the target. The client's view brackets it: **201 → target**
  and **POST → target**.
- where the time goes: **accept → started_ms** (stream read, admission into
  the pacing queue, grant, ``start_attempt.lua``) and **started_ms → target**
  (the executor: headers, connection pool, the HTTP request on loopback);
  and, from the edge's own histograms, the mean **grant → send**
  (``ezt_routing_latency_seconds``).

Goal: accept → send p50 <= 1 ms, p99 <= 5 ms. Results: bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import orjson

from ._cluster import cluster, new_key, sink_get, sink_reset, submit, summary_ms, write_result
from ._procs import REPO

WARMUP = 20


async def _metric_mean(http: aiohttp.ClientSession, edge: str, name: str) -> float | None:
    async with http.get(f"{edge}/metrics") as resp:
        text = await resp.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return round(total / count * 1000, 3) if count else None


def _histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (le -> count) of one histogram, summed over its label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def histogram_quantiles(before: dict[float, float], after: dict[float, float], qs: tuple[float, ...]) -> dict[str, Any]:
    """p-quantiles (ms) of the observations made between two scrapes, linear within buckets."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative
    total = counts[-1] if counts else 0.0
    out: dict[str, Any] = {"n": int(total)}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = None
            continue
        rank = q / 100 * total
        lo_bound, lo_count = 0.0, 0.0
        for bound, count in zip(bounds, counts):
            if count >= rank:
                if bound == float("inf"):
                    out[f"p{q:g}"] = f">{lo_bound * 1000:g}"
                else:
                    share = (rank - lo_count) / (count - lo_count) if count > lo_count else 1.0
                    out[f"p{q:g}"] = round((lo_bound + (bound - lo_bound) * share) * 1000, 3)
                break
            lo_bound, lo_count = bound, count
    return out


async def _scrape(http: aiohttp.ClientSession, edge: str) -> str:
    async with http.get(f"{edge}/metrics") as resp:
        return await resp.text()


async def _run(edge: str, redis_url: str, sink: str, jobs: int, gap_s: float) -> dict[str, Any]:
    from ezthrottle_server.common import keys
    from ezthrottle_server.common.redisconn import connect

    key = await new_key(redis_url, webhook_secret=None)
    posted: dict[str, float] = {}
    answered: dict[str, float] = {}
    job_ids: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for phase, count in (("warm", WARMUP), ("run", jobs)):
            if phase == "run":
                hist_before = _histogram(await _scrape(http, edge), "ezt_accept_to_send_seconds")
            await sink_reset(http, sink)
            for i in range(count):
                tag = f"{phase}-{i}"
                payload = orjson.dumps({"url": f"{sink}/t/{tag}", "method": "GET", "idempotent_key": tag})
                posted[tag] = time.time()
                job_ids[tag] = (await submit(http, edge, key, payload))["job_id"]
                answered[tag] = time.time()
                await asyncio.sleep(gap_s)
            deadline = time.monotonic() + 30
            while (await sink_get(http, sink, "stats"))["target"] < count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        arrived: dict[str, float] = (await sink_get(http, sink, "arrivals"))["target"]
        accept_to_send = histogram_quantiles(hist_before, _histogram(await _scrape(http, edge), "ezt_accept_to_send_seconds"), (50, 90, 99))
        grant_to_send_mean = await _metric_mean(http, edge, "ezt_routing_latency_seconds")
    r = connect(redis_url)
    try:
        tags = [f"run-{i}" for i in range(jobs)]
        async with r.pipeline(transaction=False) as pipe:
            for t in tags:
                pipe.hmget(keys.job(job_ids[t]), "created_ms", "started_ms")
            rows = await pipe.execute()
    finally:
        await r.aclose()
    accept, lower, upper, to_start, start_to_target = [], [], [], [], []
    post_to_201 = [(answered[t] - posted[t]) * 1000 for t in tags]
    for t, (created, started) in zip(tags, rows):
        if t not in arrived or not created:
            continue
        at_ms = arrived[t] * 1000
        accept.append(at_ms - int(created))
        lower.append(at_ms - answered[t] * 1000)
        upper.append(at_ms - posted[t] * 1000)
        if started:
            to_start.append(int(started) - int(created))
            start_to_target.append(at_ms - int(started))
    return {
        "jobs": jobs,
        "arrived": len(accept),
        "accept_to_send_ms": accept_to_send,
        "created_to_target_ms": summary_ms(accept),
        "bracket": {"response_201_to_target_ms": summary_ms(lower), "post_to_target_ms": summary_ms(upper)},
        "post_to_201_ms": summary_ms(post_to_201),
        "stages": {
            "accept_to_started_ms": summary_ms(to_start),
            "started_to_target_ms": summary_ms(start_to_target),
            "grant_to_send_mean_ms (edge histogram, warm-up included)": grant_to_send_mean,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="150 jobs")
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--gap-ms", type=float, default=20.0)
    a = p.parse_args(argv)
    jobs = 150 if a.quick else a.jobs
    with cluster("routing", ("iad",), delivery=False) as c:
        measured = asyncio.run(_run(c.edges["iad"], c.redis_url, c.sink, jobs, a.gap_ms / 1000))
    result = {
        "scenario": "routing",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "gap_ms": a.gap_ms,
        **measured,
        "goal": "accept -> send p50 <= 1 ms, p99 <= 5 ms",
    }
    out = write_result("routing", result)
    s = measured["created_to_target_ms"]
    a = measured["accept_to_send_ms"]
    b = measured["bracket"]
    st = measured["stages"]
    print(f"  accept -> send     p50 {a['p50']!s:>7} ms  p99 {a['p99']!s:>7} ms  (edge histogram; {a['n']} of {jobs} jobs sent at once)")
    print(f"  created -> target  p50 {s['p50']:>7} ms  p99 {s['p99']:>7} ms  (created_ms is whole ms: reads up to 1 ms high)")
    print(
        f"  201 -> target      p50 {b['response_201_to_target_ms']['p50']:>7} ms"
        f"  p99 {b['response_201_to_target_ms']['p99']:>7} ms  (lower bound)"
    )
    print(f"  POST -> target     p50 {b['post_to_target_ms']['p50']:>7} ms  p99 {b['post_to_target_ms']['p99']:>7} ms  (upper bound)")
    p = measured["post_to_201_ms"]
    print(f"  POST -> 201        p50 {p['p50']:>7} ms  p99 {p['p99']:>7} ms  (the client's wait)")
    print(f"  accept -> started  p50 {st['accept_to_started_ms']['p50']:>7} ms  p99 {st['accept_to_started_ms']['p99']:>7} ms")
    print(f"  started -> target  p50 {st['started_to_target_ms']['p50']:>7} ms  p99 {st['started_to_target_ms']['p99']:>7} ms")
    print(f"written to {out.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()

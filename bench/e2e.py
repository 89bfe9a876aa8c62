"""End-to-end throughput: N jobs to a loopback target, until every job's webhook has arrived.

    python -m bench.e2e [--quick] [--jobs 10000] [--concurrency 64] [--only ezthrottle,saq,arq] [--edge-workers N]
                        [--submit-batch K | --sdk] [--profile [LABEL]]

Each job is a POST with a 200-byte body to the sink's target; its result goes
to the sink's webhook receiver (:mod:`bench.sink`, its own process). The
driver (this process) submits N jobs with ``--concurrency`` submitters and
stops the clock when the N-th distinct webhook has arrived.

- **EZThrottle**: Redis, coordinator, delivery and one edge as real processes
  (``--edges`` for more, one per region); jobs go through ``POST
  /api/v1/jobs``; the sink's domain has its limits raised (domains.yaml);
  webhooks are signed with the customer's secret. ``--submit-batch K``
  sends them ``POST /api/v1/jobs/batch`` with K jobs each instead (one
  request per job by default, 0): then ``--concurrency`` // K batches are in
  flight (at least one), about as many jobs as one-at-a-time submitters have;
  the baselines enqueue one job per call either way. ``--sdk``: the driver's
  submitters call the SDK's ``submit_job`` (``AsyncEZThrottle``,
  ``coalesce_submits=True``: the calls of one loop turn go as one batch
  request), as the baselines' drivers call their own clients. ``--edge-workers`` runs
  each edge as that many processes on its port (``EZT_EDGE_WORKERS``; their
  CPU is counted with the edge's); by default as many as each baseline has
  worker processes (``--baseline-workers``, 2), as a node runs one edge
  process per core by default.
- **SAQ** and **arq**: the same work as one task (send, then POST the
  webhook) enqueued with each library's client into a fresh real Redis, run by
  ``--baseline-workers`` worker processes (:mod:`bench.baseline_workers`),
  each with ``--concurrency`` jobs in flight.

Reported per system: jobs/s (N / first submit to last webhook), submit→webhook
p50/p99, and ours over the faster baseline (goal >= 1; the moonshot 2). A warm-up of 200
jobs runs first on every system and is not counted. Every wait is bounded.
Results: bench/results/e2e.json.

``--profile`` records our processes (edges, delivery, coordinator) with
py-spy during the measured run (:mod:`bench._profile`): flame graphs and the
top frames as text in bench/results/profiles/. py-spy takes CPU of its own
from the same cores: read CPU per job from runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson

from ezthrottle import AsyncEZThrottle

from . import _profile
from ._cluster import (
    cluster,
    cpu_snapshot,
    new_key,
    redis_pid,
    sink_get,
    sink_process,
    sink_reset,
    submit,
    submit_jobs,
    summary_ms,
    wait_hooks,
    write_result,
)
from ._procs import REPO, redis_server

PROFILES = REPO / "bench" / "results" / "profiles"
BODY = "x" * 200
WARMUP = 200
SYSTEMS = ("ezthrottle", "saq", "arq")
SubmitMany = Callable[[list[tuple[int, str]]], Awaitable[None]]  # (index, tag) of each job


async def drive(
    http: aiohttp.ClientSession,
    sink: str,
    submit_one: Callable[[int, str], Awaitable[None]],
    n: int,
    concurrency: int,
    run: str,
    timeout_s: float,
    pids: dict[str, int] | None = None,
    profile: tuple[str, dict[str, int]] | None = None,
    redis_url: str | None = None,
    batch: tuple[int, SubmitMany] | None = None,
) -> dict[str, Any]:
    """Submit ``n`` jobs with ``concurrency`` submitters; wait for their webhooks; measure.

    With ``batch`` (K, submit_many), ``concurrency`` // K submitters (at least
    one) each hand K jobs at a time to submit_many instead of one to
    ``submit_one``. With ``pids``, also the CPU time each process used meanwhile, per job; with
    ``profile`` (a label, {name: pid}), py-spy records those processes meanwhile;
    with ``redis_url``, the Redis commands and reads (about one per round trip) per job.
    """
    pids = {**(pids or {}), "driver": os.getpid()}
    await sink_reset(http, sink)
    with contextlib.ExitStack() as stack:
        if profile:
            stack.enter_context(_profile.recording(profile[1], PROFILES, profile[0]))
        redis_before = redis_counts(redis_url) if redis_url else {}
        cpu_before = cpu_snapshot(pids)
        result = await _measure(http, sink, submit_one, n, concurrency, run, timeout_s, batch)
        cpu_after = cpu_snapshot(pids)
        redis_after = redis_counts(redis_url) if redis_url else {}
    got = result["webhooks"]
    if redis_url:
        per_job = {k: round((v - redis_before.get(k, 0)) / max(got, 1), 2) for k, v in redis_after.items()}
        result["redis_per_job"] = {k: v for k, v in sorted(per_job.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    result["cpu_us_per_job"] = {k: round((cpu_after[k] - cpu_before[k]) * 1e6 / max(got, 1)) for k in pids}
    busy = sum(cpu_after[k] - cpu_before[k] for k in pids)
    result["cpu_busy_share"] = round(busy / max(result["elapsed_s"], 1e-9) / (os.cpu_count() or 1), 2)
    return result


def redis_counts(redis_url: str) -> dict[str, int]:
    """Commands, reads (a read is about one round trip: a pipeline's commands come in one) and bytes so far, and calls by command."""
    import redis

    with redis.Redis.from_url(redis_url) as r:
        stats = r.info("stats")
        counts = {
            "commands": int(stats["total_commands_processed"]),
            "reads": int(stats.get("total_reads_processed", 0)),
            "bytes_in": int(stats["total_net_input_bytes"]),
            "bytes_out": int(stats["total_net_output_bytes"]),
        }
        for name, row in r.info("commandstats").items():
            counts[name.removeprefix("cmdstat_")] = int(row["calls"])
    return counts


async def _measure(
    http: aiohttp.ClientSession,
    sink: str,
    submit_one: Callable[[int, str], Awaitable[None]],
    n: int,
    concurrency: int,
    run: str,
    timeout_s: float,
    batch: tuple[int, SubmitMany] | None = None,
) -> dict[str, Any]:
    submitted: dict[str, float] = {}
    next_i = 0

    async def submitter() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            tag = f"{run}-{i}"
            submitted[tag] = time.time()
            await submit_one(i, tag)

    async def batch_submitter(k: int, submit_many: SubmitMany) -> None:
        nonlocal next_i
        while next_i < n:
            first, next_i = next_i, min(n, next_i + k)
            items = [(i, f"{run}-{i}") for i in range(first, next_i)]
            now = time.time()
            submitted.update((tag, now) for _, tag in items)
            await submit_many(items)

    if batch is None:
        submitters = [submitter() for _ in range(concurrency)]
    else:
        submitters = [batch_submitter(*batch) for _ in range(max(1, concurrency // batch[0]))]
    t0 = time.time()
    await asyncio.wait_for(asyncio.gather(*submitters), timeout=timeout_s)
    submit_s = time.time() - t0
    got = await wait_hooks(http, sink, n, timeout_s)
    arrivals = await sink_get(http, sink, "arrivals")
    hooks: dict[str, float] = arrivals["hooks"]
    stats = await sink_get(http, sink, "stats")
    latencies = [(hooks[t] - s) * 1000 for t, s in submitted.items() if t in hooks]
    last = max(hooks.values()) if hooks else t0
    elapsed = last - t0
    return {
        "jobs": n,
        "webhooks": got,
        "complete": got >= n,
        "elapsed_s": round(elapsed, 3),
        "submit_s": round(submit_s, 3),
        "jobs_per_s": round(got / elapsed, 1) if elapsed > 0 else None,
        "submit_to_webhook_ms": summary_ms(latencies),
        "target_requests": stats["target_requests"],
        "hook_requests": stats["hook_requests"],
    }


async def warm_up(
    http: aiohttp.ClientSession,
    sink: str,
    one: Callable[[int, str], Awaitable[None]],
    concurrency: int,
    batch: tuple[int, SubmitMany] | None = None,
) -> None:
    warm = await drive(http, sink, one, WARMUP, concurrency, "warm", 60, batch=batch)
    if not warm["complete"]:
        raise RuntimeError(f"warm-up: {warm['webhooks']} of {WARMUP} webhooks arrived within 60 s; see bench/results/logs")


def job_spec(sink: str, tag: str, route: str = "t") -> dict[str, Any]:
    """The bench's job (bench.capacity's too): a POST with a 200-byte body to the sink's ``route``, one webhook."""
    return {
        "url": f"{sink}/{route}/{tag}",
        "method": "POST",
        "body": BODY,
        "headers": {"Content-Type": "application/json"},
        "webhooks": [{"url": f"{sink}/hook"}],
        "metadata": {"tag": tag},
        "idempotent_key": tag,
    }


def _job(sink: str, tag: str) -> bytes:
    return orjson.dumps(job_spec(sink, tag))


# -- the systems --------------------------------------------------------------------


async def _ezthrottle(
    edges: list[str],
    redis_url: str,
    sink: str,
    n: int,
    concurrency: int,
    timeout_s: float,
    pids: dict[str, int],
    profile: str | None = None,
    submit_batch: int = 0,
    sdk: bool = False,
) -> dict[str, Any]:
    key = await new_key(redis_url)
    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    client = AsyncEZThrottle(key, base_url=edges, coalesce_submits=True, max_connections=concurrency + 8) if sdk else None
    async with aiohttp.ClientSession(connector=connector) as http, contextlib.AsyncExitStack() as closing:
        job_ids: dict[str, str] = {}
        if client is not None:
            closing.push_async_callback(client.aclose)

        async def one(i: int, tag: str) -> None:
            if client is not None:  # the SDK's submit_job, the calls of a loop turn coalesced into one batch request
                job_ids[tag] = (await client.submit_job(**job_spec(sink, tag)))["job_id"]
                return
            job_ids[tag] = (await submit(http, edges[i % len(edges)], key, _job(sink, tag)))["job_id"]

        async def many(items: list[tuple[int, str]]) -> None:
            tags = [tag for _, tag in items]
            ids = await submit_jobs(http, edges[items[0][0] // submit_batch % len(edges)], key, [job_spec(sink, t) for t in tags])
            job_ids.update(zip(tags, ids))

        batch = (submit_batch, many) if submit_batch else None
        await warm_up(http, sink, one, concurrency, batch)
        ours = {k: pid for k, pid in pids.items() if k.startswith("edge") or k in ("delivery", "coordinator")}
        recording = (profile, ours) if profile else None
        result = await drive(http, sink, one, n, concurrency, "run", timeout_s, pids, recording, redis_url, batch)
        hooks = (await sink_get(http, sink, "arrivals"))["hooks"]
        result["outbound"] = {region_url: await outbound_counts(http, region_url) for region_url in edges}
    result["stages_ms"] = await stages(redis_url, {t: j for t, j in job_ids.items() if t.startswith("run-")}, hooks)
    return result


async def outbound_counts(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """A node's outbound requests and the connections it opened for them, by kind (connection reuse), since it started."""
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for name, short in (("ezt_outbound_requests_total", "requests"), ("ezt_outbound_connections_opened_total", "opened")):
            if line.startswith(name + "{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                counts[f"{kind}_{short}"] = float(line.rsplit(" ", 1)[1])
    return counts


async def stages(redis_url: str, job_ids: dict[str, str], hooks: dict[str, float]) -> dict[str, Any]:
    """Where a job's time went, from its record: created → started (queue, pacing,
    routing), started → finished (the send), finished → webhook (delivery)."""
    from ezthrottle_server.common import keys
    from ezthrottle_server.common.redisconn import connect

    r = connect(redis_url)
    try:
        tags = list(job_ids)
        async with r.pipeline(transaction=False) as pipe:
            for t in tags:
                pipe.hmget(keys.job(job_ids[t]), "created_ms", "started_ms", "finished_ms")
            rows = await pipe.execute()
    finally:
        await r.aclose()
    queued, sending, delivering = [], [], []
    for t, (created, started, finished) in zip(tags, rows):
        if created and started and finished and t in hooks:
            queued.append(int(started) - int(created))
            sending.append(int(finished) - int(started))
            delivering.append(hooks[t] * 1000 - int(finished))
    return {
        "created_to_started": summary_ms(queued),
        "started_to_finished": summary_ms(sending),
        "finished_to_webhook": summary_ms(delivering),
    }


def run_ezthrottle(
    n: int,
    concurrency: int,
    edges: int,
    timeout_s: float,
    edge_workers: int = 1,
    profile: str | None = None,
    submit_batch: int = 0,
    sdk: bool = False,
) -> dict[str, Any]:
    regions = ("iad", "lax", "ord")[: max(1, min(edges, 3))]
    with cluster("e2e", regions, extra_env={"EZT_EDGE_WORKERS": str(edge_workers)}) as c:
        urls = list(c.edges.values())
        result = asyncio.run(_ezthrottle(urls, c.redis_url, c.sink, n, concurrency, timeout_s, c.pids, profile, submit_batch, sdk))
    result["setup"] = f"{len(regions)} edge(s) of {edge_workers} process(es) + coordinator + delivery, real processes"
    in_flight = max(1, concurrency // submit_batch) if submit_batch else concurrency
    if sdk:
        result["submit"] = f"AsyncEZThrottle(coalesce_submits=True).submit_job, {concurrency} callers"
    elif submit_batch:
        result["submit"] = f"POST /api/v1/jobs/batch of {submit_batch} jobs, {in_flight} in flight"
    else:
        result["submit"] = f"POST /api/v1/jobs, {in_flight} in flight"
    return result


@contextlib.contextmanager
def baseline_workers(system: str, redis_url: str, concurrency: int, processes: int, gc: str = "python") -> Iterator[dict[str, int]]:
    log_dir = REPO / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    argv = [sys.executable, "-m", "bench.baseline_workers", system, "--redis", redis_url, "--concurrency", str(concurrency), "--gc", gc]
    try:
        for i in range(processes):
            with open(log_dir / f"e2e-{system}-worker-{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=os.environ.copy(),
                    )
                )
        asyncio.run(_wait_ready(redis_url, system, processes, procs))
        yield {f"{system}-worker-{i}": p.pid for i, p in enumerate(procs)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _wait_ready(redis_url: str, system: str, processes: int, procs: list[subprocess.Popen[bytes]]) -> None:
    import redis.asyncio as aioredis

    from .baseline_workers import READY_KEY

    deadline = time.monotonic() + 30
    async with aioredis.from_url(redis_url) as r:
        while len(await r.keys(f"{READY_KEY}:{system}:*")) < processes:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a {system} worker exited at start; see bench/results/logs/e2e-{system}-worker-*.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system} workers were not ready within 30 s")
            await asyncio.sleep(0.05)


async def _saq(redis_url: str, sink: str, n: int, concurrency: int, timeout_s: float, pids: dict[str, int]) -> dict[str, Any]:
    from saq import Queue

    queue = Queue.from_url(redis_url, name="bench", max_concurrent_ops=concurrency)
    await queue.connect()
    try:
        async with aiohttp.ClientSession() as http:

            async def one(_i: int, tag: str) -> None:
                await queue.enqueue(
                    "call", method="POST", url=f"{sink}/t/{tag}", body=BODY, hook=f"{sink}/hook", tag=tag, retries=1, timeout=30
                )

            await warm_up(http, sink, one, concurrency)
            return await drive(http, sink, one, n, concurrency, "run", timeout_s, pids, redis_url=redis_url)
    finally:
        await queue.disconnect()


async def _arq(redis_url: str, sink: str, n: int, concurrency: int, timeout_s: float, pids: dict[str, int]) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        async with aiohttp.ClientSession() as http:

            async def one(_i: int, tag: str) -> None:
                await pool.enqueue_job("call", "POST", f"{sink}/t/{tag}", BODY, f"{sink}/hook", tag)

            await warm_up(http, sink, one, concurrency)
            return await drive(http, sink, one, n, concurrency, "run", timeout_s, pids, redis_url=redis_url)
    finally:
        await pool.aclose()


def run_baseline(system: str, n: int, concurrency: int, processes: int, timeout_s: float, gc: str = "python") -> dict[str, Any]:
    pids: dict[str, int] = {}
    with redis_server() as redis_url, sink_process(f"e2e-{system}", pids) as sink:
        pids["redis"] = redis_pid(redis_url)
        with baseline_workers(system, redis_url, concurrency, processes, gc) as workers:
            runner = _saq if system == "saq" else _arq
            result = asyncio.run(runner(redis_url, sink, n, concurrency, timeout_s, {**pids, **workers}))
    result["setup"] = f"{processes} worker process(es) x {concurrency} concurrent jobs, {gc} GC"
    return result


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 jobs")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64, help="submitters, and jobs in flight per baseline worker")
    p.add_argument("--edges", type=int, default=1, help="edge processes (one per region, up to 3)")
    p.add_argument("--baseline-workers", type=int, default=2, help="worker processes per baseline")
    p.add_argument(
        "--edge-workers",
        type=int,
        default=None,
        help="processes per edge (EZT_EDGE_WORKERS); default: as many as --baseline-workers, so each system has the same processes",
    )
    p.add_argument(
        "--submit-batch",
        type=int,
        default=0,
        metavar="K",
        help="EZThrottle's driver sends POST /api/v1/jobs/batch of K jobs, concurrency // K (at least 1) in flight; 0: one POST a job",
    )
    p.add_argument(
        "--sdk",
        action="store_true",
        help="EZThrottle's driver calls the SDK's submit_job (AsyncEZThrottle, coalesce_submits=True) instead of POSTing itself",
    )
    p.add_argument("--only", default=",".join(SYSTEMS))
    p.add_argument(
        "--baseline-gc",
        choices=("python", "tuned"),
        default="python",
        help="the baselines' garbage collector: Python's defaults, or tuned as our services run it (bench/baseline_workers.py)",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const=time.strftime("%Y%m%d-%H%M%S"),
        metavar="LABEL",
        help="py-spy records our processes during the measured run: bench/results/profiles/LABEL-<process>.{svg,txt,raw}",
    )
    a = p.parse_args(argv)
    n = 2000 if a.quick else a.jobs
    edge_workers = a.edge_workers if a.edge_workers is not None else a.baseline_workers
    timeout_s = 120.0 if a.quick else 300.0
    only = [s for s in SYSTEMS if s in {x.strip() for x in a.only.split(",")}]
    rows: dict[str, Any] = {}
    for system in only:
        if system == "ezthrottle":
            rows[system] = run_ezthrottle(n, a.concurrency, a.edges, timeout_s, edge_workers, a.profile, a.submit_batch, a.sdk)
        else:
            rows[system] = run_baseline(system, n, a.concurrency, a.baseline_workers, timeout_s, a.baseline_gc)
        r = rows[system]
        print(
            f"  {system:<11} {r['jobs_per_s']!s:>8} jobs/s"
            f"  p50 {r['submit_to_webhook_ms']['p50']:>9} ms  p99 {r['submit_to_webhook_ms']['p99']:>9} ms"
            f"  ({r['webhooks']}/{r['jobs']} webhooks; {r['setup']})",
            flush=True,
        )
    baselines = [rows[s]["jobs_per_s"] or 0 for s in ("saq", "arq") if s in rows]
    ratio = None
    if "ezthrottle" in rows and baselines and max(baselines) > 0:
        ratio = round((rows["ezthrottle"]["jobs_per_s"] or 0) / max(baselines), 2)
    result = {
        "scenario": "e2e",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "jobs": n,
        "concurrency": a.concurrency,
        "systems": rows,
        "ratio_vs_faster_baseline": ratio,
        "edge_workers": edge_workers,
        "submit_batch": a.submit_batch,  # 0: EZThrottle's jobs were submitted one POST each
        "sdk": a.sdk,  # EZThrottle's jobs went through AsyncEZThrottle(coalesce_submits=True)
        "baseline_workers": a.baseline_workers,
        "baseline_gc": a.baseline_gc,
        "goal": "ezthrottle jobs/s >= 1 x the faster of SAQ and arq (issue 19's floor); the moonshot is 2 x",
    }
    out = write_result("e2e", result)
    print(f"ezthrottle / faster baseline: {ratio} (goal >= 1, moonshot 2); written to {out.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()

"""Pacing: rate accuracy, isolation between domains, fairness between customers.

    python -m bench.pacing [--quick] [--only rate,learned,isolation,fairness] [--duration 60] [--rates 2,20,100]

Every scenario runs a fresh throwaway Redis, a coordinator and three edges
(iad, lax, ord) as real processes; targets are aiohttp servers on loopback in
this process, which also submits the jobs. Results are printed and written to
``bench/results/pacing.json``.

- **rate**: a strict target answers 429 (``Retry-After: 1``) to a request
  that finds N others in the last second (a sliding window, clocked at its
  arrival, as many real APIs count) and advertises ``X-EZTHROTTLE-RPS: N``.
  Jobs are spread over the three edges (each runs in its own region, with
  its simulated latency). Measured from the first arrival for ``--duration``
  s (60; 10 with ``--quick``): achieved rate / N (goal >= 0.97), 429s
  provoked (goal 0), the largest count in any sliding 1 s window (goal <= N).
  N = 2, 20 and 100.
- **learned**: a strict target enforces 3/s (sliding window) while it
  advertises ``X-EZTHROTTLE-RPS: 10`` (and ``Retry-After: 1`` on its 429s).
  The domain learns a lower rate from the 429s (AIMD, ``release.lua``).
  Reported after the first 20 s (80 s in all; 40 with ``--quick``): the share
  of 429s (goal <= 2%) and the achieved rate / 3 (goal >= 0.85).
- **isolation**: 5,000 jobs wait for a 2 requests/s domain; then jobs for
  another domain are submitted one at a time, 0.6 s apart (so they never wait
  for their own domain's limit). Reported: their submit-to-send delay (p50,
  p99, max; goal p99 <= 100 ms), against the same submissions on an idle
  cluster as the baseline.
- **fairness**: customer A submits 100 jobs for a 2 requests/s domain at once;
  customer B then submits 5 jobs 1 s apart. Reported: each of B's
  submit-to-send delays (goal <= 1.5 s), against an idle-domain baseline.

Every loop is bounded in count and in time; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ._procs import REPO, create_key, edge_env, free_port, redis_server, service

REGIONS = ("iad", "lax", "ord")
RESULTS = REPO / "bench" / "results" / "pacing.json"


# -- targets -------------------------------------------------------------------------


class Target:
    """A loopback target that records when each request arrived (monotonic s).

    With ``limit_n``, it answers 429 with ``Retry-After: 1`` to a request that
    finds ``limit_n`` accepted ones in the last second (a sliding window), and
    advertises the limit.
    """

    def __init__(self, limit_n: int | None = None, advertise_n: int | None = None) -> None:
        self.limit_n = limit_n
        self.advertise_n = advertise_n or limit_n  # what it claims in X-EZTHROTTLE-RPS
        self.arrivals: list[tuple[float, int, str]] = []  # (at, status, tag)
        self._recent: collections.deque[float] = collections.deque()  # accepted arrivals of the last second
        self._runner: web.AppRunner | None = None
        self._waiters: list[tuple[str, asyncio.Future[float]]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Target:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def arrival_of(self, tag: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((tag, fut))
        return fut

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        tag = request.query.get("j", "")
        status, headers = 200, {}
        if self.limit_n is not None:
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.limit_n:
                status, headers = 429, {"Retry-After": "1"}
            else:
                self._recent.append(now)
            headers["X-EZTHROTTLE-RPS"] = str(self.advertise_n)
            headers["X-EZTHROTTLE-MAX-CONCURRENT"] = "16"  # per node: at N = 100 the default 2 would bound the rate, not the pacer
        self.arrivals.append((now, status, tag))
        for waiter in [w for w in self._waiters if w[0] == tag]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(now)
        return web.Response(status=status, headers=headers, text="ok" if status == 200 else "slow down")


# -- the cluster ---------------------------------------------------------------------


@contextlib.contextmanager
def cluster(tag: str, *, simulate_latency: bool = False) -> Iterator[tuple[str, dict[str, str]]]:
    """Redis, a coordinator and one edge per region: (redis url, {region: edge url}).

    ``simulate_latency``: each edge adds its region's latency from regions.yaml, as ``make up-local`` does."""
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        base = {"REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REPO / "regions.yaml"), "EZT_SIMULATE_LATENCY": "0"}
        port = free_port()
        stack.enter_context(
            service(
                "ezthrottle_server.coordinator",
                {**base, "EZT_PORT": str(port), "EZT_NODE_ID": f"bench-coordinator-{tag}"},
                f"http://127.0.0.1:{port}/readyz",
                f"pacing-{tag}-coordinator",
            )
        )
        edges: dict[str, str] = {}
        for region in REGIONS:
            port = free_port()
            stack.enter_context(
                service(
                    "ezthrottle_server.edge",
                    edge_env(redis_url, region, port, EZT_SIMULATE_LATENCY="1" if simulate_latency else "0"),
                    f"http://127.0.0.1:{port}/readyz",
                    f"pacing-{tag}-edge-{region}",
                )
            )
            edges[region] = f"http://127.0.0.1:{port}"
        yield redis_url, edges


async def submit(http: aiohttp.ClientSession, edge: str, key: str, payload: dict[str, Any]) -> str:
    for _attempt in range(20):
        async with http.post(f"{edge}/api/v1/jobs", json=payload, headers={"Authorization": f"Bearer {key}"}) as resp:
            body = await resp.json()
            if resp.status in (200, 201):
                return str(body["job_id"])
            if resp.status not in (429, 503):
                raise RuntimeError(f"submit failed: {resp.status} {body}")
        await asyncio.sleep(0.1)
    raise RuntimeError("submit kept being refused")


async def submit_all(http: aiohttp.ClientSession, edges: dict[str, str], key: str, urls: list[str], concurrency: int = 32) -> None:
    """Submit one job per URL, round-robin over the regions' edges (each job stays in its edge's region)."""
    sem = asyncio.Semaphore(concurrency)
    regions = list(edges)

    async def one(i: int, url: str) -> None:
        region = regions[i % len(regions)]
        async with sem:
            await submit(http, edges[region], key, {"url": url, "regions": [region], "region_policy": "strict"})

    await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def sliding_violations(times: list[float], n: int, window_s: float = 1.0) -> int:
    """Arrivals that would find ``n`` others in the second before them."""
    times = sorted(times)
    out, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        out += hi - lo + 1 > n
    return out


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def wait_for(predicate, timeout_s: float, interval_s: float = 0.05) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout_s:.0f}s")
        await asyncio.sleep(interval_s)


# -- scenarios -------------------------------------------------------------------------


async def _run_against(target: Target, tag: str, jobs: int, duration_s: float) -> float:
    """Spread ``jobs`` for ``target`` over a fresh cluster's three edges; wait ``duration_s`` from the first
    arrival; returns that arrival's time (the target is stopped afterwards)."""
    try:
        with cluster(tag, simulate_latency=True) as (redis_url, edges):
            key = await create_key(redis_url)
            async with aiohttp.ClientSession() as http:
                await submit_all(http, edges, key, [f"{target.url}/{tag}?j={i}" for i in range(jobs)])

            async def first() -> bool:
                return bool(target.arrivals)

            await wait_for(first, 30)
            start = target.arrivals[0][0]
            await asyncio.sleep(max(0.0, start + duration_s - time.monotonic()) + 0.2)
    finally:
        await target.stop()
    return start


async def rate(n: int, duration_s: float) -> dict[str, Any]:
    target = await Target(limit_n=n).start()
    jobs = int(n * duration_s * 1.1) + 3 * n + 10  # a backlog the whole time
    start = await _run_against(target, f"rate{n}", jobs, duration_s)
    window = [(t, s) for t, s, _ in target.arrivals if start <= t < start + duration_s]
    accepted = sum(1 for _, s in window if s == 200)
    rejected = sum(1 for _, s in window if s == 429)
    achieved = accepted / duration_s
    settled = sum(1 for t, s in window if s == 200 and t >= start + 1.0) / (duration_s - 1.0)  # the submissions share the cores first
    return {
        "n": n,
        "duration_s": duration_s,
        "jobs_submitted": jobs,
        "achieved_rps": round(achieved, 3),
        "achieved_over_n": round(achieved / n, 4),
        "after_first_s_over_n": round(settled / n, 4),
        "provoked_429": rejected,
        "max_in_any_1s_window": max_in_window([t for t, _ in window]),
        "sliding_window_limiter_would_refuse": sliding_violations([t for t, _ in window], n),
        "goals": {"achieved_over_n": ">= 0.97", "provoked_429": 0, "max_in_any_1s_window": f"<= {n}"},
    }


async def learned(enforced: int, advertised: int, duration_s: float, settle_s: float = 20.0) -> dict[str, Any]:
    """A target that enforces ``enforced``/s (sliding window) while advertising ``advertised``/s."""
    target = await Target(limit_n=enforced, advertise_n=advertised).start()
    jobs = int(enforced * duration_s * 1.5) + 20
    start = await _run_against(target, f"learned{enforced}", jobs, duration_s)
    late = [(t, s) for t, s, _ in target.arrivals if start + settle_s <= t < start + duration_s]
    early = [(t, s) for t, s, _ in target.arrivals if t < start + settle_s]
    accepted = sum(1 for _, s in late if s == 200)
    refused = sum(1 for _, s in late if s == 429)
    span = duration_s - settle_s
    return {
        "enforced_rps": enforced,
        "advertised_rps": advertised,
        "duration_s": duration_s,
        "first_s_429": sum(1 for _, s in early if s == 429),
        "after_s": settle_s,
        "after_429_share": round(refused / max(1, len(late)), 4),
        "after_achieved_rps": round(accepted / span, 3),
        "after_achieved_over_enforced": round(accepted / span / enforced, 4),
        "goals": {"after_429_share": "<= 0.02", "after_achieved_over_enforced": ">= 0.85"},
    }


async def _probe_delays(
    http: aiohttp.ClientSession, edges: dict[str, str], key: str, target: Target, count: int, gap_s: float
) -> list[float]:
    """Submit ``count`` jobs for ``target`` one at a time; each one's submit-to-send delay (ms)."""
    regions = list(edges)
    delays = []
    for i in range(count):
        tag = f"probe-{time.monotonic_ns()}-{i}"
        arrived = target.arrival_of(tag)
        region = regions[i % len(regions)]
        sent = time.monotonic()
        await submit(http, edges[region], key, {"url": f"{target.url}/b?j={tag}", "regions": [region], "region_policy": "strict"})
        at = await asyncio.wait_for(arrived, timeout=10)
        delays.append((at - sent) * 1000)
        await asyncio.sleep(gap_s)
    return delays


async def isolation(backlog: int, probes: int) -> dict[str, Any]:
    slow, other = await Target().start(), await Target().start()
    try:
        with cluster("isolation") as (redis_url, edges):
            from ezthrottle_server.common import keys
            from ezthrottle_server.common.redisconn import connect
            from ezthrottle_server.common.urls import domain_of
            from ezthrottle_server.pacing.scope import SHARED

            key = await create_key(redis_url)
            async with aiohttp.ClientSession() as http:
                # probes are 0.6 s apart: at 2/s each finds its own domain's token free
                baseline = await _probe_delays(http, edges, key, other, probes, 0.6)
                submit_started = time.monotonic()
                await submit_all(http, edges, key, [f"{slow.url}/a?j=a{i}" for i in range(backlog)], concurrency=64)
                submit_s = time.monotonic() - submit_started
                # at once, while the backlog may still be on its way into the queues
                right_after = (await _probe_delays(http, edges, key, other, 1, 0.6))[0]
                r = connect(redis_url)
                domain = domain_of(slow.url)

                async def parked() -> bool:
                    waiting = sum([await r.zcard(keys.pacing_wait(domain, SHARED, reg)) for reg in REGIONS])
                    return waiting + len(slow.arrivals) >= backlog

                try:
                    await wait_for(parked, 60)
                    waiting_at_start = sum([await r.zcard(keys.pacing_wait(domain, SHARED, reg)) for reg in REGIONS])
                finally:
                    await r.aclose()
                loaded = await _probe_delays(http, edges, key, other, probes, 0.6)
    finally:
        await slow.stop()
        await other.stop()
    return {
        "backlog_jobs": backlog,
        "backlog_waiting_when_probed": waiting_at_start,
        "backlog_submit_s": round(submit_s, 2),
        "probe_right_after_backlog_ms": round(right_after, 2),
        "probes": probes,
        "baseline_idle_ms": _summary(baseline),
        "with_backlog_ms": _summary(loaded),
        "p99_over_baseline_p99": round(percentile(loaded, 99) / max(percentile(baseline, 99), 0.001), 2),
        "goals": {"with_backlog_ms.p99": "<= 100"},
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


async def fairness(flood: int, patient: int) -> dict[str, Any]:
    domain_target, idle_target = await Target().start(), await Target().start()
    try:
        with cluster("fairness") as (redis_url, edges):
            key_a = await create_key(redis_url, "customer-a")
            key_b = await create_key(redis_url, "customer-b")
            async with aiohttp.ClientSession() as http:
                baseline = await _probe_delays(http, edges, key_b, idle_target, patient, 1.0)
                await submit_all(http, edges, key_a, [f"{domain_target.url}/a?j=a{i}" for i in range(flood)])
                delays = await _probe_delays(http, edges, key_b, domain_target, patient, 1.0)
                flood_sent_meanwhile = sum(1 for _, _, tag in domain_target.arrivals if tag.startswith("a"))
    finally:
        await domain_target.stop()
        await idle_target.stop()
    return {
        "flood_jobs": flood,
        "flood_sent_while_b_ran": flood_sent_meanwhile,
        "b_delays_ms": [round(d, 1) for d in delays],
        "b_max_ms": round(max(delays), 1),
        "baseline_idle_b_delays_ms": [round(d, 1) for d in baseline],
        "b_max_over_baseline_max": round(max(delays) / max(max(baseline), 0.001), 1),
        "goals": {"b_delays_ms": "each <= 1500"},
    }


# -- main ------------------------------------------------------------------------------------


def _print(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name}")
    for k, v in result.items():
        print(f"  {k:<30} {v}")
    sys.stdout.flush()


async def run(only: set[str], duration_s: float, quick: bool, rates: tuple[int, ...] = (2, 20, 100)) -> dict[str, Any]:
    out: dict[str, Any] = {"quick": quick, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "rate" in only:
        for n in rates:
            out[f"rate_n{n}"] = await rate(n, duration_s)
            _print(f"rate accuracy, N={n}", out[f"rate_n{n}"])
    if "learned" in only:
        out["learned"] = await learned(3, 10, 40.0 if quick else 80.0)
        _print("learned limit (enforces 3/s, advertises 10/s)", out["learned"])
    if "isolation" in only:
        out["isolation"] = await isolation(5000, 20 if quick else 50)
        _print("isolation (5,000 jobs waiting on a 2 rps domain)", out["isolation"])
    if "fairness" in only:
        out["fairness"] = await fairness(100, 5)
        _print("fairness (A floods 100, B sends 5 one second apart)", out["fairness"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10 s rate runs, fewer isolation probes")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per rate run (default 60)")
    p.add_argument("--only", default="rate,learned,isolation,fairness", help="comma list of scenarios")
    p.add_argument("--rates", default="2,20,100", help="the rate scenario's limits N (comma list)")
    a = p.parse_args(argv)
    try:
        rates = tuple(int(n) for n in a.rates.split(",") if n.strip())
    except ValueError:
        p.error("--rates: a comma list of whole numbers")
    if not rates or min(rates) < 1:
        p.error("--rates: a comma list of whole numbers above 0")
    duration = min(a.duration, 10.0) if a.quick else a.duration
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    unknown = only - {"rate", "learned", "isolation", "fairness"}
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    result = asyncio.run(run(only, duration, a.quick, rates))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = orjson.loads(RESULTS.read_bytes()) if RESULTS.exists() else {}
    RESULTS.write_bytes(orjson.dumps({**previous, **result}, option=orjson.OPT_INDENT_2))
    print(f"\nresults: {Path(RESULTS).relative_to(REPO)}")


if __name__ == "__main__":
    main()

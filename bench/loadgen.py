"""A load generator in its own process: N concurrent clients post jobs for a
fixed time and report accepted/s and latency percentiles as JSON on stdout.

    python -m bench.loadgen --url http://127.0.0.1:8701 --key K --concurrency 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import aiohttp
import orjson


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run(
    url: str, key: str, concurrency: int, duration_s: float, target: str, max_requests: int, due_now: bool = False
) -> dict[str, object]:
    """``due_now``: the jobs are due at once, over the comma list of ``target`` URLs in turn (executed while the
    load runs); else each carries a retry_at an hour ahead (only acceptance is measured)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    targets = target.split(",")
    body_base: dict[str, object] = {"url": targets[0], "method": "POST", "body": "x" * 200}
    if not due_now:
        body_base["retry_at"] = int(time.time() * 1000) + 3_600_000
    deadline = time.monotonic() + duration_s
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {key}"}) as http:

        async def client() -> None:
            nonlocal sent
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                payload = orjson.dumps({**body_base, "url": targets[sent % len(targets)], "idempotent_key": uuid.uuid4().hex})
                t0 = time.perf_counter()
                async with http.post(f"{url}/api/v1/jobs", data=payload, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    accepted = statuses.get(201, 0)
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 3),
        "requests": len(latencies),
        "accepted": accepted,
        "accepted_per_s": round(accepted / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="none")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--target", default="http://127.0.0.1:9/never")
    p.add_argument("--max-requests", type=int, default=2_000_000)
    p.add_argument("--due-now", action="store_true", help="jobs due at once, over the comma list of --target URLs")
    a = p.parse_args()
    result = asyncio.run(run(a.url, a.key, a.concurrency, a.duration, a.target, a.max_requests, a.due_now))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

"""Helpers for the pacing integration tests: many submissions, arrival times."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ezthrottle_server.common import keys
from support.jobs import submit


async def submit_many(http, base_urls: list[str], key: str, payloads: list[dict[str, Any]], concurrency: int = 16) -> list[str]:
    """Submit ``payloads`` round-robin over ``base_urls``; returns the job ids in order."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, payload: dict[str, Any]) -> str:
        async with sem:
            return (await submit(http, base_urls[i % len(base_urls)], key, payload))["job_id"]

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads))))


def wall_ms(monotonic_at: float) -> float:
    """A target's arrival time (monotonic) as epoch ms."""
    return (monotonic_at - time.monotonic()) * 1000 + time.time() * 1000


def max_in_window(times_s: list[float], window_s: float = 1.0, jitter_s: float = 0.05) -> int:
    """Most arrivals seen within any `window_s`, as the target clocks them.

    Grants are spaced exactly in Redis time, but an arrival also carries the
    send path's jitter (event-loop turns, connection setup), so two requests
    granted 500 ms apart can land 495 ms apart. The window is shrunk by
    `jitter_s` so that jitter alone never counts as a burst; a real burst (the
    limit not applied) still fills the window at once."""
    window_s -= jitter_s
    times_s = sorted(times_s)
    best, lo = 0, 0
    for hi, t in enumerate(times_s):
        while t - times_s[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def overrides_applied(redis, domain: str, field: str, value: str, timeout_s: float = 5.0) -> None:
    """Wait until Redis holds ``field: value`` in the domain's overrides."""
    deadline = time.monotonic() + timeout_s
    while await redis.hget(keys.pacing_conf(domain), field) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{domain} {field}={value} not applied within {timeout_s}s")
        await asyncio.sleep(0.02)

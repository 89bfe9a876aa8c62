"""Helpers to submit jobs over HTTP and wait for their final state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

FINAL = frozenset({"success", "failed", "cancelled", "expired"})


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(http: aiohttp.ClientSession, base_url: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base_url}/api/v1/jobs", json=payload, headers=auth(key)) as resp:
        body = await resp.json()
        assert resp.status in (200, 201), body
        return body


async def get_job(http: aiohttp.ClientSession, base_url: str, key: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{base_url}/api/v1/jobs/{job_id}", headers=auth(key)) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def poll_view(
    fetch: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    failure: Callable[[dict[str, Any]], str],
    timeout_s: float,
    poll_s: float,
) -> dict[str, Any]:
    """``await fetch()`` every ``poll_s`` until ``done(view)``; return that view.

    After ``timeout_s``, fail with ``failure(last view)`` (``{}`` if none came).
    """
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await fetch()
                if done(last):
                    return last
                await asyncio.sleep(poll_s)
    except TimeoutError:
        raise AssertionError(failure(last)) from None


async def wait_final(
    http: aiohttp.ClientSession, base_url: str, key: str, job_id: str, timeout_s: float = 10.0, states: frozenset[str] = FINAL
) -> dict[str, Any]:
    """Poll the job until it reaches one of ``states``; fail with its last view."""
    return await poll_view(
        lambda: get_job(http, base_url, key, job_id),
        lambda view: view["status"] in states,
        lambda last: f"job {job_id} did not reach {sorted(states)} in {timeout_s}s; last: {last}",
        timeout_s,
        poll_s=0.03,
    )


async def sdk_wait_final(client: Any, job_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll the job through an SDK client (``AsyncEZThrottle.get_job``) until it is final."""
    return await poll_view(
        lambda: client.get_job(job_id),
        lambda view: view["status"] in FINAL,
        lambda last: f"job {job_id} not final in {timeout_s}s: {last}",
        timeout_s,
        poll_s=0.05,
    )


async def job_records(redis: Any) -> list[str]:
    """The keys of every job record in Redis (every partition; every master of a cluster)."""
    from ezthrottle_server.common import keys

    found = [k async for k in redis.scan_iter(match=keys.JOB_KEY_PATTERN, count=1000)]
    return sorted(k for k in found if keys.job_partition(k.rpartition(":job:")[2]) is not None)

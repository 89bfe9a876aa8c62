"""Helpers to submit jobs over HTTP and wait for their final state."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

FINAL = frozenset({"success", "failed"})


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


async def wait_final(
    http: aiohttp.ClientSession, base_url: str, key: str, job_id: str, timeout_s: float = 10.0, states: frozenset[str] = FINAL
) -> dict[str, Any]:
    """Poll the job until it reaches one of ``states``; fail with its last view."""
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await get_job(http, base_url, key, job_id)
                if last["status"] in states:
                    return last
                await asyncio.sleep(0.03)
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not reach {sorted(states)} in {timeout_s}s; last: {last}") from None


async def sdk_wait_final(client: Any, job_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll the job through an SDK client (``AsyncEZThrottle.get_job``) until it is final."""
    view: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                view = await client.get_job(job_id)
                if view["status"] in FINAL:
                    return view
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"job {job_id} not final in {timeout_s}s: {view}") from None

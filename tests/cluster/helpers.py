"""Helpers of the cluster tests: partitions of idempotent keys, fast settings."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp

from ezthrottle_server.common.jobs import key_digest
from support.jobs import auth
from support.sse import events

PARTITIONS = 4
FAST = {"retry_backoff_base_s": 0.01, "retry_backoff_cap_s": 0.05}


def partition_of(customer: str, idempotent_key: str, partitions: int = PARTITIONS) -> int:
    """The partition ``POST /api/v1/jobs`` puts a job with this key in (as edge/api.py computes it)."""
    return int(key_digest(customer, idempotent_key)[:8], 16) % partitions


def keys_per_partition(customer: str, per_partition: int, prefix: str, partitions: int = PARTITIONS) -> dict[int, list[str]]:
    """Idempotent keys that put ``per_partition`` jobs of ``customer`` in every partition."""
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per_partition for v in out.values()):
        key = f"{prefix}-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}"
        p = partition_of(customer, key, partitions)
        if len(out[p]) < per_partition:
            out[p].append(key)
        i += 1
    return out


async def collect_events(
    http: aiohttp.ClientSession, base_url: str, key: str, job_id: str, timeout_s: float = 15.0, opened: asyncio.Event | None = None
) -> list[tuple[str, Any]]:
    """A job's server-sent events, from the snapshot until the stream ends; ``opened`` is set once the snapshot came."""
    got = []
    async with asyncio.timeout(timeout_s):
        async with http.get(f"{base_url}/api/v1/jobs/{job_id}/events", headers=auth(key)) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            async for name, data in events(resp):
                got.append((name, data))
                if opened is not None:
                    opened.set()
    return got

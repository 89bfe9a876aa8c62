"""Helpers of the outbound-policy integration tests."""

from __future__ import annotations

from typing import Any

import aiohttp

from ezthrottle_server.edge.context import CTX
from support.jobs import auth
from support.services import RunningApp
from unit.outbound.netguard import StaticResolver


async def use_resolver(edge: RunningApp, table: dict | StaticResolver) -> StaticResolver:
    """Make ``edge``'s executor answer names from ``table``, or through a resolver of the test's own (call before
    submitting jobs)."""
    resolver = table if isinstance(table, StaticResolver) else StaticResolver(table)
    executor = edge.app[CTX].executor
    await executor.close()
    executor.resolver = resolver
    await executor.start()
    return resolver


async def post_job(http: aiohttp.ClientSession, edge: RunningApp, key: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{edge.url}/api/v1/jobs", json=payload, headers=auth(key)) as resp:
        return resp.status, await resp.json()

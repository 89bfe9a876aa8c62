"""Fixtures of the outbound-policy integration tests.

Every test here runs under the egress guard (autouse): a connect or a name
lookup aimed beyond loopback is refused and recorded, and fails the test. Edges
answer names with a StaticResolver (``helpers.use_resolver``), never with DNS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from unit.outbound.netguard import EgressGuard


@pytest_asyncio.fixture(autouse=True)
async def egress_guard() -> AsyncIterator[EgressGuard]:
    guard = EgressGuard(asyncio.get_running_loop()).install()
    try:
        yield guard
    finally:
        guard.uninstall()
    assert guard.refused == [], f"the code under test tried to leave loopback: {guard.refused}"

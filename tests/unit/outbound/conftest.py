"""Fixtures of the outbound-policy unit tests: an egress guard on the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from unit.outbound.netguard import EgressGuard, guarding_egress


@pytest_asyncio.fixture
async def egress_guard() -> AsyncIterator[EgressGuard]:
    """Refuses and records any connect or lookup beyond loopback; fails the test if one was tried."""
    async with guarding_egress() as guard:
        yield guard

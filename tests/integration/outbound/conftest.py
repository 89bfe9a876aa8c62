"""Fixtures of the outbound-policy integration tests.

Every test here runs under the egress guard (autouse): a connect or a name
lookup aimed beyond loopback is refused and recorded, and fails the test. Edges
answer names with a StaticResolver (``helpers.use_resolver``), never with DNS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from unit.outbound.netguard import EgressGuard, guarding_egress


@pytest_asyncio.fixture(autouse=True)
async def egress_guard() -> AsyncIterator[EgressGuard]:
    async with guarding_egress() as guard:
        yield guard

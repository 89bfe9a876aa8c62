"""Fixtures of the outbound-policy unit tests: an egress guard on the test's loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from unit.outbound.netguard import EgressGuard


@pytest_asyncio.fixture
async def egress_guard() -> AsyncIterator[EgressGuard]:
    """Refuses and records any connect or lookup beyond loopback; fails the test if one was tried."""
    guard = EgressGuard(asyncio.get_running_loop()).install()
    try:
        yield guard
    finally:
        guard.uninstall()
    assert guard.refused == [], f"the code under test tried to leave loopback: {guard.refused}"

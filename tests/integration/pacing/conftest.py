"""Fixtures of the pacing integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from support.targets import Target


@pytest_asyncio.fixture
async def other_target() -> AsyncIterator[Target]:
    """A second loopback target: another domain (same host, another port)."""
    server = await Target().start()
    try:
        yield server
    finally:
        await server.stop()

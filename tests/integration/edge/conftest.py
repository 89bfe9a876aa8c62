"""Fixtures of the edge's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web

from ezthrottle_server.common.config import Settings
from integration.delivery.helpers import FAST
from support.services import RunningApp, app_starter


@pytest_asyncio.fixture
async def delivery(redis: Any, redis_url: str) -> AsyncIterator[RunningApp]:
    """A delivery service beside the edge (FAST retries); a test module may define its own."""
    from ezthrottle_server.delivery.app import create_app

    def create(settings: Settings) -> web.Application:
        return create_app(settings, stop_grace_s=1.0)

    async with app_starter("delivery", redis_url, create, **FAST) as start:
        yield await start()

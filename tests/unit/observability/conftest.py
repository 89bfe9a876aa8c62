"""Fixtures of the observability tests: in-process delivery workers (fast retries)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from integration.delivery.helpers import FAST
from support.services import RunningApp, make_settings


@pytest_asyncio.fixture
async def delivery(redis: Any, redis_url: str) -> AsyncIterator[RunningApp]:
    from ezthrottle_server.delivery.app import create_app

    settings = make_settings("delivery", redis_url, node_id="delivery-obs-test", **FAST)
    app = await RunningApp(create_app(settings, stop_grace_s=1.0), settings).start()
    try:
        yield app
    finally:
        await app.stop()

"""Fixtures for the delivery service: in-process delivery workers with tiny
backoffs, receivers (also on chosen ports), the published SDK's verify functions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from ezthrottle_server.common.config import Settings
from integration.delivery.helpers import FAST, HoldingReceiver, PortReceiver
from support.published import PublishedSDK, published_sdk
from support.services import RunningApp, StartApp, app_starter
from support.targets import WebhookReceiver

StartDelivery = StartApp


@pytest_asyncio.fixture
async def start_delivery(redis: Any, redis_url: str) -> AsyncIterator[StartDelivery]:
    """Start delivery workers in-process: ``await start_delivery("lax", delivery_window_s=1)``."""
    from ezthrottle_server.delivery.app import create_app

    def create(settings: Settings) -> web.Application:
        return create_app(settings, stop_grace_s=1.0)

    async with app_starter("delivery", redis_url, create, **FAST) as start:
        yield start


@pytest_asyncio.fixture
async def start_edge(redis: Any, redis_url: str) -> AsyncIterator[StartApp]:
    """Edges that leave every webhook POST to the delivery service (``EZT_EDGE_DELIVERS_WEBHOOKS=0``): these are the
    delivery service's tests. The edge's first attempts: tests/integration/edge/test_edge_webhooks.py."""
    from ezthrottle_server.edge.app import create_app

    async with app_starter("edge", redis_url, create_app, region="iad", edge_delivers_webhooks=False) as start:
        yield start


@pytest_asyncio.fixture
async def delivery(start_delivery: StartDelivery) -> RunningApp:
    return await start_delivery()


@pytest_asyncio.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[WebhookReceiver]]]:
    """Start any number of receivers: ``await receivers()``, ``await receivers(port=p)``."""
    started: list[WebhookReceiver] = []

    async def start(port: int | None = None, status: int = 200, holding: int = 0) -> WebhookReceiver:
        server: WebhookReceiver
        if holding:
            server = HoldingReceiver(holding)
        elif port is not None:
            server = PortReceiver(port, status)
        else:
            server = WebhookReceiver(status)
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop()


@pytest.fixture(scope="session")
def published() -> PublishedSDK:
    """``ezthrottle==1.3.0``'s verify functions (``published_verify.py``); skip without it."""
    return published_sdk(Path(__file__).with_name("published_verify.py"))

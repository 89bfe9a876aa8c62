"""Fixtures for the delivery service: in-process delivery workers with tiny
backoffs, receivers (also on chosen ports), the published SDK's verify functions."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from integration.delivery.helpers import FAST, PUBLISHED_VERSION, HoldingReceiver, PortReceiver, PublishedVerify
from support.services import REPO, RunningApp, make_settings
from support.targets import WebhookReceiver

StartDelivery = Callable[..., Awaitable[RunningApp]]


@pytest_asyncio.fixture
async def start_delivery(redis: Any, redis_url: str) -> AsyncIterator[StartDelivery]:
    """Start delivery workers in-process: ``await start_delivery("lax", delivery_window_s=1)``."""
    from ezthrottle_server.delivery.app import create_app

    running: list[RunningApp] = []

    async def start(region: str | None = None, **overrides: Any) -> RunningApp:
        for name, value in FAST.items():
            overrides.setdefault(name, value)
        overrides.setdefault("node_id", f"delivery-{region or 'any'}-test-{len(running)}")
        settings = make_settings("delivery", redis_url, region, **overrides)
        app = await RunningApp(create_app(settings, stop_grace_s=1.0), settings).start()
        running.append(app)
        return app

    try:
        yield start
    finally:
        for app in reversed(running):
            await app.stop()


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
def published() -> Iterator[PublishedVerify]:
    """``ezthrottle==1.3.0`` in ``.cache/`` (shared with the SDK tests, same lock); skip without it.

    Never a dependency of the project: it lives in its own virtualenv.
    """
    venv = REPO / ".cache" / f"ezthrottle-{PUBLISHED_VERSION}-venv"
    python = venv / "bin" / "python"
    ready = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be installing it
        if not ready.exists():
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "-q", f"ezthrottle=={PUBLISHED_VERSION}"],
            ]
            for step in steps:
                try:
                    done = subprocess.run(step, capture_output=True, text=True, timeout=300)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    pytest.skip(f"cannot set up ezthrottle=={PUBLISHED_VERSION} in {venv}: {exc}")
                if done.returncode != 0:
                    pytest.skip(f"cannot set up ezthrottle=={PUBLISHED_VERSION} in {venv} (no package index?): {done.stderr[-500:]}")
            ready.write_text(PUBLISHED_VERSION)
    yield PublishedVerify(python)

"""Run the real service apps in this test's event loop, on loopback ports."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from ezthrottle_server.common.config import Settings, load_settings

from .redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
REGIONS_FILE = REPO / "regions.yaml"


def partitions_env() -> dict[str, str]:
    """``EZT_PARTITIONS`` of a whole run against a cluster, for processes the tests start."""
    return {"EZT_PARTITIONS": os.environ["EZT_PARTITIONS"]} if os.environ.get("EZT_PARTITIONS") else {}


def make_settings(role: str, redis_url: str, region: str | None = None, **overrides: Any) -> Settings:
    env = {"REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_SIMULATE_LATENCY": "0"}
    if os.environ.get("EZT_PARTITIONS"):  # e.g. a whole run against a cluster: EZT_TEST_REDIS_CLUSTER=1 EZT_PARTITIONS=4
        env["EZT_PARTITIONS"] = os.environ["EZT_PARTITIONS"]
    if region:
        env["EZT_REGION"] = region
    settings = load_settings(role, env=env)
    overrides.setdefault("port", free_port())
    return settings.with_overrides(**overrides)


class RunningApp:
    def __init__(self, app: web.Application, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    async def start(self) -> RunningApp:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


StartApp = Callable[..., Awaitable[RunningApp]]

_GUARDED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # loops an app_starter already guards


@asynccontextmanager
async def loopback_only() -> AsyncIterator[None]:
    """In-process services under an egress guard: a connect or a name lookup aimed anywhere but loopback is
    refused, and the block fails if anything tried one (tests never send traffic off loopback, even by mistake).
    Once per loop: the first app_starter of a test guards it for all."""
    from unit.outbound.netguard import EgressGuard

    loop = asyncio.get_running_loop()
    if loop in _GUARDED:
        yield
        return
    guard = EgressGuard(loop).install()
    _GUARDED.add(loop)
    try:
        yield
    finally:
        guard.uninstall()
        _GUARDED.discard(loop)
    assert guard.refused == [], f"a service under test tried to leave loopback: {guard.refused}"


@asynccontextmanager
async def app_starter(
    role: str,
    redis_url: str,
    create_app: Callable[[Settings], web.Application],
    *,
    region: str | None = None,
    **defaults: Any,
) -> AsyncIterator[StartApp]:
    """``start(region, **overrides)`` for apps of ``role`` in-process; all stop after the block.

    ``region`` is the default region, ``defaults`` the default settings
    overrides; each app gets a node id of its own unless one is given. The
    apps stop in the reverse order of their start.
    """
    running: list[RunningApp] = []

    async def start(region: str | None = region, **overrides: Any) -> RunningApp:
        for name, value in defaults.items():
            overrides.setdefault(name, value)
        overrides.setdefault("node_id", f"{role}-{region or 'any'}-test-{len(running)}")
        settings = make_settings(role, redis_url, region, **overrides)
        app = await RunningApp(create_app(settings), settings).start()
        running.append(app)
        return app

    async with loopback_only():
        try:
            yield start
        finally:
            for app in reversed(running):
                await app.stop()

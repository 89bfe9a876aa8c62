"""Run the real service apps in this test's event loop, on loopback ports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiohttp import web

from ezthrottle_server.common.config import Settings, load_settings

from .redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
REGIONS_FILE = REPO / "regions.yaml"


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

    async def start(self) -> "RunningApp":
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

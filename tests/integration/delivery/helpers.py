"""Helpers of the delivery tests: fast settings, receivers on chosen ports,
waiting on a job's webhooks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from support.jobs import get_job, poll_view
from support.redis_server import free_port
from support.services import REPO
from support.targets import Received, WebhookReceiver

# Tiny backoffs so a retry comes within ~0.1 s; a window long enough that no
# test dead-letters by accident (the dead-letter tests set their own).
FAST = {
    "delivery_backoff_base_s": 0.05,
    "delivery_backoff_cap_s": 0.2,
    "delivery_window_s": 60.0,
    "delivery_poll_s": 0.01,
    "delivery_timeout_s": 2.0,
    "visibility_timeout_ms": 2000,
}


def delivery_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a delivery worker run as its own process, with FAST settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZT_") or k == "EZT_PARTITIONS"}
    env.update(
        {
            "REDIS_URL": redis_url,
            "EZT_REGIONS_FILE": str(REPO / "regions.yaml"),
            "EZT_SIMULATE_LATENCY": "0",
            "EZT_DELIVERY_BACKOFF_BASE_S": str(FAST["delivery_backoff_base_s"]),
            "EZT_DELIVERY_BACKOFF_CAP_S": str(FAST["delivery_backoff_cap_s"]),
            "EZT_DELIVERY_WINDOW_S": str(FAST["delivery_window_s"]),
            "EZT_DELIVERY_POLL_S": str(FAST["delivery_poll_s"]),
            "EZT_DELIVERY_TIMEOUT_S": "30",
            "EZT_VISIBILITY_TIMEOUT_MS": str(FAST["visibility_timeout_ms"]),
            "EZT_DELIVERY_WORKERS": "1",  # one process, whose pid is the worker's
        }
    )
    env.update(extra)
    return env


# -- receivers --------------------------------------------------------------------


class PortReceiver(WebhookReceiver):
    """A webhook receiver on a port chosen in advance: down until started."""

    def __init__(self, port: int, status: int = 200) -> None:
        super().__init__(status)
        self.port = port

    async def start(self) -> PortReceiver:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self


class HoldingReceiver(WebhookReceiver):
    """Holds the first ``hold`` requests open until ``release`` is set; answers 200 after."""

    def __init__(self, hold: int = 1) -> None:
        super().__init__()
        self.hold = hold
        self.release = asyncio.Event()

    async def _hook(self, request: web.Request) -> web.Response:
        await self._record(request)
        if len(self.requests) <= self.hold:
            await self.release.wait()
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        self.release.set()
        await super().stop()


def closed_port() -> int:
    """A loopback port where nothing listens (connection refused), for now."""
    return free_port()


# -- waiting on the job view ------------------------------------------------------


async def wait_webhooks(
    http: aiohttp.ClientSession,
    base_url: str,
    key: str,
    job_id: str,
    cond: Callable[[dict[str, Any]], bool],
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Poll ``GET /api/v1/jobs/{id}`` until ``cond(view["webhooks"])``; return the view."""
    return await poll_view(
        lambda: get_job(http, base_url, key, job_id),
        lambda view: bool(view.get("webhooks")) and cond(view["webhooks"]),
        lambda last: f"job {job_id}: webhooks never met the condition in {timeout_s}s; last: {last.get('webhooks')}",
        timeout_s,
        poll_s=0.02,
    )


def states(hooks: dict[str, Any]) -> list[str]:
    return [e["state"] for e in hooks["endpoints"]]


def all_in(*wanted: str) -> Callable[[dict[str, Any]], bool]:
    return lambda hooks: all(s in wanted for s in states(hooks))


def by_job(requests: list[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for r in requests:
        out.setdefault(r.json()["job_id"], []).append(r)
    return out

"""The coordinator process: leadership lease, delayed-work release, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from ..common.config import Settings
from ..common.metrics import metrics_handler
from ..common.redisconn import Scripts, connect
from ..common.http import errors_middleware, json_response
from .delayed import DelayedReleaser
from .health import HealthRules, RegionMonitor
from .lease import Lease


@dataclass
class CoordinatorContext:
    settings: Settings
    redis: aioredis.Redis
    lease: Lease


CTX = web.AppKey("coordinator_ctx", CoordinatorContext)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = connect(settings.redis_url)
        scripts = Scripts(redis)
        lease = Lease(redis, scripts, settings.node_id)
        app[CTX] = CoordinatorContext(settings, redis, lease)
        await lease.tick()
        tasks = [
            asyncio.create_task(lease.run(), name="lease"),
            asyncio.create_task(DelayedReleaser(settings, redis, scripts, lease).run(), name="delayed"),
            asyncio.create_task(RegionMonitor(settings, redis, lease, HealthRules(
                silent_after_ms=settings.region_silent_after_ms, recover_after_ms=settings.region_recover_after_ms
            )).run(), name="health"),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(lease.release())
            await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return json_response({"status": "ok", "node": ctx.settings.node_id, "leader": ctx.lease.is_leader})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        await asyncio.wait_for(ctx.redis.ping(), timeout=1.0)
        ok = True
    except Exception:
        ok = False
    body = {"status": "ready" if ok else "not_ready", "redis": ok, "leader": ctx.lease.is_leader}
    return json_response(body, 200 if ok else 503)

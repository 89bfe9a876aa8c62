"""The delivery service process: webhook fanout for finished jobs.

This slice only serves health and metrics; the webhook worker (quorum,
signatures, retries, dead letters) lands with the delivery issue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ..common.config import Settings
from ..common.http import errors_middleware, json_response
from ..common.metrics import metrics_handler
from ..common.redisconn import connect

REDIS = web.AppKey("redis", object)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = connect(settings.redis_url)
        app[REDIS] = redis
        try:
            yield
        finally:
            await redis.aclose()

    async def healthz(_request: web.Request) -> web.Response:
        return json_response({"status": "ok", "node": settings.node_id})

    async def readyz(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(request.app[REDIS].ping(), timeout=1.0)  # type: ignore[attr-defined]
            ok = True
        except Exception:
            ok = False
        return json_response({"status": "ready" if ok else "not_ready", "redis": ok}, 200 if ok else 503)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app

"""The delivery service process: webhook fanout for finished jobs (several may run).

It serves only health and metrics; the work is :class:`~.worker.DeliveryWorker`,
started in a cleanup context so it stops (gracefully, in-flight POSTs given
a grace period) only if it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from ..common.config import Settings
from ..common.http import errors_middleware, json_response
from ..common.metrics import metrics_handler, prime
from ..common.outbound import OutboundPolicy
from ..common.redisconn import Scripts, connect
from .sender import WebhookSender
from .worker import DeliveryWorker


@dataclass
class DeliveryContext:
    settings: Settings
    redis: aioredis.Redis
    worker: DeliveryWorker
    ready: bool = False


CTX = web.AppKey("delivery_ctx", DeliveryContext)


def create_app(settings: Settings, *, stop_grace_s: float = 10.0) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    prime("delivery")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = connect(settings.redis_url, max_connections=max(64, settings.partitions * 2 + 16))
        sender = WebhookSender(settings, OutboundPolicy.from_settings(settings))
        await sender.start()
        worker = DeliveryWorker(settings, redis, Scripts(redis), sender)
        ctx = DeliveryContext(settings, redis, worker)
        app[CTX] = ctx
        try:
            await worker.start()
            ctx.ready = True
            yield
        finally:
            ctx.ready = False
            await worker.stop(stop_grace_s)
            await sender.close()
            await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return json_response({"status": "ok", "node": ctx.settings.node_id, "region": ctx.settings.region})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        await asyncio.wait_for(ctx.redis.ping(), timeout=1.0)
        redis_ok = True
    except Exception:
        redis_ok = False
    ready = ctx.ready and redis_ok
    body = {"status": "ready" if ready else "not_ready", "redis": redis_ok, "inflight": ctx.worker.inflight}
    return json_response(body, 200 if ready else 503)

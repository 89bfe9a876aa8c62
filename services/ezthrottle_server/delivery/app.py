"""The delivery service process: webhook fanout for finished jobs (several may run).

It serves only health and metrics; the work is :class:`~.worker.DeliveryWorker`,
started in a cleanup context so it stops (gracefully, in-flight POSTs given
a grace period) only if it started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ..common.config import Settings
from ..common.http import errors_middleware
from ..common.metrics import prime
from ..common.outbound import OutboundPolicy
from ..common.redisconn import RedisClient, Scripts, connect
from ..common.service import add_probes
from ..common.webhook_sender import WebhookSender
from .worker import DeliveryWorker


@dataclass
class DeliveryContext:
    settings: Settings
    redis: RedisClient
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
    add_probes(
        app, CTX, health=lambda ctx: {"region": ctx.settings.region}, readiness=lambda ctx: (ctx.ready, {"inflight": ctx.worker.inflight})
    )
    return app

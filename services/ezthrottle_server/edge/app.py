"""The edge node's aiohttp application: public API plus the region's job loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from ..common import keys
from ..common.config import Settings
from ..common.metrics import prime
from ..common.service import add_probes
from ..common.outbound import OutboundPolicy
from ..common.redisconn import Scripts, connect, connect_pubsub
from ..common.http import after_response_middleware, errors_middleware
from .api import ROUTES
from .deliveries_api import ROUTES as DELIVERIES_ROUTES
from .secrets_api import ROUTES as SECRETS_ROUTES
from .proxy_api import ROUTES as PROXY_ROUTES
from .workflow_api import ROUTES as WORKFLOW_ROUTES
from .search_api import ROUTES as SEARCH_ROUTES
from .openapi import route as openapi_route
from .auth import Authenticator
from .context import CTX, EdgeContext
from .executor import Executor
from .admission import Admission
from .events import EventHub
from .quota import Quotas
from ..common.routing import RegionStates
from .worker import RegionWorker

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


async def _beat_once(ctx: EdgeContext) -> None:
    """Tell the coordinator this node lives, how busy it is and how its sends fare."""
    beat = {
        "node": ctx.settings.node_id,
        "region": ctx.settings.region,
        "url": ctx.settings.advertised_url,
        "ts_ms": int(time.time() * 1000),
        "inflight": ctx.worker.inflight,
        "outcomes": ctx.outcomes.snapshot(),
    }
    await ctx.redis.hset(keys.heartbeats(), ctx.settings.node_id, orjson.dumps(beat))


async def _heartbeat(ctx: EdgeContext) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)
        try:
            await _beat_once(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("heartbeat failed", exc_info=True)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, after_response_middleware], client_max_size=settings.max_body_bytes)
    prime("edge", settings.region)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # one blocking read per partition's stream holds a connection: room for them and the rest
        redis = connect(settings.redis_url, max_connections=max(64, settings.partitions * 2 + 16))
        scripts = Scripts(redis)
        policy = OutboundPolicy.from_settings(settings)
        executor = Executor(settings, policy)
        await executor.start()
        worker = RegionWorker(settings, redis, scripts, executor)
        ctx = EdgeContext(
            settings=settings,
            redis=redis,
            scripts=scripts,
            auth=Authenticator.from_settings(redis, settings),
            outbound=policy,
            executor=executor,
            worker=worker,
            regions=RegionStates(redis, settings.region_ids),
            quotas=Quotas(settings, redis, scripts),
            admission=Admission(settings, redis),
            events=EventHub(connect_pubsub(settings.redis_url)),
        )
        app[CTX] = ctx
        ctx.events.start()
        worker.outcomes = ctx.outcomes  # the worker records each send's outcome for region health
        worker.region_states = ctx.regions.states  # reroutes go to healthy regions
        await worker.start()
        await _beat_once(ctx)
        beat = asyncio.create_task(_heartbeat(ctx))
        await ctx.admission.refresh()
        admission = asyncio.create_task(ctx.admission.run())
        ctx.ready = True
        try:
            yield
        finally:
            ctx.ready = False
            beat.cancel()
            admission.cancel()
            await asyncio.gather(beat, admission, return_exceptions=True)
            try:  # leave at once, rather than after the silence timeout
                await redis.hdel(keys.heartbeats(), settings.node_id)
            except Exception:
                log.warning("could not remove heartbeat", exc_info=True)
            await worker.stop(grace_s=settings.stop_grace_s)
            await ctx.events.close()
            await executor.close()
            await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_routes(ROUTES)
    app.router.add_routes(SECRETS_ROUTES)
    app.router.add_routes(DELIVERIES_ROUTES)
    app.router.add_routes(PROXY_ROUTES)
    app.router.add_routes(WORKFLOW_ROUTES)
    app.router.add_routes(SEARCH_ROUTES)
    add_probes(
        app,
        lambda r: r.app[CTX].redis,
        health=lambda r: {"node": r.app[CTX].settings.node_id, "admission": r.app[CTX].admission.state()},
        readiness=lambda r: (r.app[CTX].ready, {"region": r.app[CTX].settings.region, "admission": r.app[CTX].admission.state()}),
    )
    app.router.add_routes([openapi_route(settings)])
    return app

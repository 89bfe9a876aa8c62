"""The edge node's aiohttp application: public API plus the region's job loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from ..common import keys
from ..common.bulk import BulkRunner
from ..common.config import Settings
from ..common.http import after_response_middleware, errors_middleware
from ..common.loops import run_every
from ..common.metrics import prime
from ..common.outbound import OutboundPolicy
from ..common.pubsub import EventHub
from ..common.redisconn import Scripts, connect, connect_pubsub
from ..common.routing import RegionStates, region_usable
from ..common.service import add_probes
from .admission import Admission
from .api import ROUTES
from .auth import Authenticator
from .cancel_api import ROUTES as CANCEL_ROUTES
from .cancel_api import RUNNER as BULK_RUNNER
from .console import add_console
from .context import CTX, EdgeContext
from .deliveries_api import ROUTES as DELIVERIES_ROUTES
from .executor import Executor
from .faults import FaultyExecutor
from .flow_api import ROUTES as FLOW_ROUTES
from .openapi import route as openapi_route
from .probes import Prober
from .proxy_api import ROUTES as PROXY_ROUTES
from .quota import Quotas
from .schedules_api import ROUTES as SCHEDULES_ROUTES
from .search_api import ROUTES as SEARCH_ROUTES
from .secrets_api import ROUTES as SECRETS_ROUTES
from .worker import RegionWorker
from .workflow_api import ROUTES as WORKFLOW_ROUTES

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
REGION_WATCH_S = 0.25


async def _beat_once(ctx: EdgeContext) -> None:
    """Tell the coordinator this node lives, how busy it is and how its sends fare."""
    beat = {
        "node": ctx.settings.node_id,
        "region": ctx.settings.region,
        "url": ctx.settings.advertised_url,
        "ts_ms": int(time.time() * 1000),
        "inflight": ctx.worker.inflight,
        "outcomes": ctx.outcomes.snapshot(),
        "probes": ctx.prober.snapshot() if ctx.prober is not None else {},
    }
    await ctx.redis.hset(keys.heartbeats(), ctx.settings.node_id, orjson.dumps(beat))  # type: ignore[arg-type, misc]  # redis-py#2399


async def _heartbeat(ctx: EdgeContext) -> None:
    changed = ctx.prober.changed if ctx.prober is not None else asyncio.Event()
    while True:
        # once a second, and at once when a probe result changes (asyncio.timeout, not wait_for: Python 3.11's
        # wait_for swallows a cancel that comes as the event is set, and the stopping edge never ended this loop)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEARTBEAT_INTERVAL_S):
                await changed.wait()
        changed.clear()
        try:
            await _beat_once(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("heartbeat failed", exc_info=True)


async def _check_region(ctx: EdgeContext) -> None:
    """Is this node's region usable in the view submissions are routed by? (``/readyz``)"""
    here = ctx.settings.region
    assert here is not None
    ctx.region_usable = region_usable(here, here, await ctx.regions.states())


async def _watch_region(ctx: EdgeContext) -> None:
    await run_every(REGION_WATCH_S, lambda: _check_region(ctx), log=log, failed="could not read region states", level=logging.DEBUG)


async def _peer_edges(ctx: EdgeContext) -> dict[str, list[str]]:
    return {rid: list(view.get("edges") or []) for rid, view in (await ctx.regions.views()).items()}


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, after_response_middleware], client_max_size=settings.max_body_bytes)
    prime("edge", settings.region)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # one blocking read per partition's stream holds a connection: room for them and the rest
        redis = connect(settings.redis_url, max_connections=max(64, settings.partitions * 2 + 16))
        scripts = Scripts(redis)
        policy = OutboundPolicy.from_settings(settings)
        # test_outbound_fault: a switch only tests set (edge/faults.py)
        executor = (FaultyExecutor if settings.test_outbound_fault else Executor)(settings, policy)
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
        ctx.prober = Prober(settings, executor, lambda: _peer_edges(ctx))
        await worker.start()
        await _beat_once(ctx)
        beat = asyncio.create_task(_heartbeat(ctx))
        probes = asyncio.create_task(ctx.prober.run())
        await ctx.admission.refresh()
        admission = asyncio.create_task(ctx.admission.run())
        await _check_region(ctx)
        watch = asyncio.create_task(_watch_region(ctx))
        bulk = ctx.extra[BULK_RUNNER] = BulkRunner(redis, scripts, settings, settings.node_id)  # cancel_api.runner
        sweep = asyncio.create_task(bulk.sweep_forever())  # bulk actions whose edge stopped go on here
        ctx.ready = True
        try:
            yield
        finally:
            ctx.ready = False
            for task in (beat, probes, admission, watch, sweep):
                task.cancel()
            await asyncio.gather(beat, probes, admission, watch, sweep, return_exceptions=True)
            await bulk.stop()  # each action lets its lease go: another edge goes on with it
            try:  # leave at once, rather than after the silence timeout
                await redis.hdel(keys.heartbeats(), settings.node_id)  # type: ignore[misc]  # redis-py#2399
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
    app.router.add_routes(CANCEL_ROUTES)
    app.router.add_routes(SEARCH_ROUTES)
    app.router.add_routes(FLOW_ROUTES)
    app.router.add_routes(SCHEDULES_ROUTES)
    add_probes(
        app,
        CTX,
        health=lambda ctx: {"admission": ctx.admission.state()},
        # ready once started and while its own region is usable in the published view
        readiness=lambda ctx: (
            ctx.ready and ctx.region_usable,
            {"region": ctx.settings.region, "region_usable": ctx.region_usable, "admission": ctx.admission.state()},
        ),
    )
    app.router.add_routes([openapi_route(settings)])
    add_console(app)  # GET /console (edge/console/)
    return app

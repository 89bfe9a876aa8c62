"""The coordinator process: leadership lease, delayed-work release, health,
per-domain pacing overrides (domains.yaml, applied on change or SIGHUP), and
the repair of jobs that nothing holds any more (coordinator/repair.py)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from ..common.config import Settings
from ..common.http import errors_middleware
from ..common.metrics import prime
from ..common.pubsub import EventHub
from ..common.redisconn import RedisClient, Scripts, connect, connect_pubsub
from ..common.service import add_probes
from ..pacing.overrides import OverridesWatcher
from .delayed import DelayedReleaser
from .evacuate import Evacuator
from .health import HealthRules, RegionMonitor
from .lease import Lease
from .repair import Repairer
from .sampler import QueueSampler
from .schedules import ScheduleFirer
from .wake import Wakes
from .workflows import WorkflowSpawner


@dataclass
class CoordinatorContext:
    settings: Settings
    redis: RedisClient
    lease: Lease


CTX = web.AppKey("coordinator_ctx", CoordinatorContext)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    prime("coordinator")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = connect(settings.redis_url)
        scripts = Scripts(redis)
        lease = Lease(redis, scripts, settings.node_id)
        app[CTX] = CoordinatorContext(settings, redis, lease)
        await lease.tick()
        hub = EventHub(connect_pubsub(settings.redis_url))
        hub.start()
        wakes = Wakes(hub)
        tasks = [
            asyncio.create_task(lease.run(), name="lease"),
            asyncio.create_task(wakes.run(), name="wakes"),
            asyncio.create_task(DelayedReleaser(settings, redis, scripts, lease, wakes=wakes).run(), name="delayed"),
            asyncio.create_task(WorkflowSpawner(settings, redis, scripts, lease, wakes=wakes).run(), name="workflows"),
            asyncio.create_task(
                RegionMonitor(
                    settings,
                    redis,
                    lease,
                    HealthRules(silent_after_ms=settings.region_silent_after_ms, recover_after_ms=settings.region_recover_after_ms),
                ).run(),
                name="health",
            ),
        ]
        tasks.append(asyncio.create_task(QueueSampler(settings, redis, lease).run(), name="sampler"))
        tasks.append(asyncio.create_task(Repairer(settings, redis, scripts, lease).run(), name="repair"))
        tasks.append(asyncio.create_task(Evacuator(settings, redis, scripts, lease).run(), name="evacuate"))
        tasks.append(asyncio.create_task(ScheduleFirer(settings, redis, scripts, lease, wakes=wakes).run(), name="schedules"))
        domains = OverridesWatcher(redis, settings.domains_file, is_active=lambda: lease.is_leader)
        tasks.append(asyncio.create_task(domains.run(), name="domains"))
        forget_sighup = _on_sighup(domains.request_reload)
        try:
            yield
        finally:
            forget_sighup()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.close()
            await asyncio.shield(lease.release())
            await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    add_probes(app, CTX, health=lambda ctx: {"leader": ctx.lease.is_leader}, readiness=lambda ctx: (True, {"leader": ctx.lease.is_leader}))
    return app


def _on_sighup(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGHUP (where the loop can); returns how to stop."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # no signals here (Windows, a thread)
        return lambda: None

    def forget() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return forget

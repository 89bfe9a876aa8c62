"""Running a long-lived asyncio service: uvloop, signals, graceful stop, probes.

An edge or delivery node may run several worker processes on one port
(``EZT_EDGE_WORKERS``, ``EZT_DELIVERY_WORKERS``): :func:`main_for` then runs
their supervisor (``common/workers.py``), and each worker serves here on the
socket it inherited.

A signal handler only sets an event; shutdown runs in ``finally``: the HTTP
site stops taking requests, then the app's cleanup contexts stop background
work in reverse order of start.

Every service answers the same three operator routes (:func:`add_probes`):
``/healthz`` (the process answers; never touches Redis, so a Redis outage
restarts nothing), ``/readyz`` (Redis answers a PING within a second, never
evicts keys, and the service says it is ready) and ``/metrics``.

Redis must run with ``maxmemory-policy noeviction``: any other policy lets it
drop idempotency keys (duplicate sends), send leases (a POST sent twice),
FRUGAL claims and quota counters under memory pressure. :class:`EvictionCheck`
reads the policy (every master of a cluster) at most every few seconds, and
``/readyz`` fails while one of them would evict, with an ERROR log line that
says why.

Once serving, a service moves what it built at start (modules, settings,
clients: about 60,000 objects) out of the cyclic garbage collector's reach
(``gc.freeze``), and collects its youngest generation after
:data:`GC_YOUNG_THRESHOLD` net allocations instead of Python's 700. A job's
objects die by their reference counts; at 700, the jobs in flight alone set
off a collection every few jobs (about 190 in an edge process over 1,100 jobs
of the e2e bench, 0.15-0.2 s of its time), at 10,000 two in the whole run.
Cyclic garbage waits longer for a collection, a few MB at the most.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from . import metrics
from .config import ConfigError, Settings, load_settings
from .http import json_response
from .logs import setup_logging
from .metrics import metrics_handler, use_multiprocess_dir
from .redisconn import RedisClient, info_per_master
from .workers import die_with_supervisor, supervise

log = logging.getLogger(__name__)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    sock: socket.socket | None = None,
    supervisor_fd: int = -1,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down in order.

    A worker of a supervisor (common/workers.py) serves on the listening
    ``sock`` it inherited, and stops too when ``supervisor_fd`` (its end of a
    pipe from the supervisor) closes.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if supervisor_fd >= 0:
        loop.add_reader(supervisor_fd, stop.set)  # readable only at EOF: the supervisor is gone
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    flushing = asyncio.create_task(metrics.flush_periodically()) if metrics.BUFFERED else None  # a worker's metrics file
    try:
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock, backlog=1024)
        else:
            site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
        await site.start()
        log.info("listening on %s (pid %s)", site.name, os.getpid())
        tune_gc()
        if on_started is not None:
            await on_started()
        await stop.wait()
        log.info("stopping")
    finally:
        if supervisor_fd >= 0:
            loop.remove_reader(supervisor_fd)
        await runner.cleanup()
        if flushing is not None:
            flushing.cancel()
            await asyncio.gather(flushing, return_exceptions=True)
        log.info("stopped")


GC_YOUNG_THRESHOLD = 10_000  # net allocations between two collections of the youngest generation (Python's: 700)


def tune_gc() -> None:
    """What the service built at start stays (module docstring): out of every collection from now on."""
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run(
    app_factory: Callable[[], Awaitable[web.Application]],
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    supervisor_fd: int = -1,
) -> None:
    install_uvloop()

    async def main() -> None:
        await serve(await app_factory(), host, port, sock=sock, supervisor_fd=supervisor_fd)

    asyncio.run(main())


def check_secrets_at_rest(settings: Settings) -> None:
    """The production profile seals webhook secrets at rest: without ``EZT_SECRETS_KEYS`` a
    service refuses to start, unless ``EZT_INSECURE_PLAINTEXT_SECRETS=1`` opts out (logged loudly)."""
    if settings.profile != "production" or settings.secrets_keys:
        return
    if not settings.insecure_plaintext_secrets:
        raise ConfigError(
            "the production profile needs EZT_SECRETS_KEYS, which seals webhook secrets at rest "
            "(`ezthrottle-admin secrets new-key`, then EZT_SECRETS_KEYS=k1:<key>; docs/deploy.md#secrets-at-rest). "
            "To store them in clear anyway, set EZT_INSECURE_PLAINTEXT_SECRETS=1"
        )
    log.warning("EZT_INSECURE_PLAINTEXT_SECRETS=1: webhook secrets are stored in clear in Redis, its files and backups")


def main_for(role: str, create_app: Callable[[Settings], web.Application]) -> None:
    """A service's entry point: settings from the environment, JSON logs, serve until SIGTERM
    (or supervise the node's worker processes, each of which comes back here)."""
    try:
        settings = load_settings(role)
        setup_logging(role, settings.node_id)
        check_secrets_at_rest(settings)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if settings.listen_fd < 0 and settings.workers(role) > 1:
        raise SystemExit(supervise(role, settings))
    if settings.supervisor_fd >= 0:
        die_with_supervisor(settings.supervisor_fd)
    if settings.metrics_multiproc_dir:
        use_multiprocess_dir(settings.metrics_multiproc_dir)
    sock = socket.socket(fileno=settings.listen_fd) if settings.listen_fd >= 0 else None

    async def factory() -> web.Application:
        return create_app(settings)

    run(factory, settings.host, settings.port, sock=sock, supervisor_fd=settings.supervisor_fd)


async def redis_answers(redis: RedisClient, timeout_s: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):  # not wait_for: it may swallow a cancel (edge/app.py)
            await redis.ping()
        return True
    except Exception:
        return False


SAFE_EVICTION_POLICY = "noeviction"


class EvictionCheck:
    """Whether Redis (every master of a cluster) may evict keys, read at most every ``check_every_s``.

    The policy comes from ``INFO memory`` (``maxmemory_policy``): the same value
    as ``CONFIG GET maxmemory-policy``, and answered by managed Redis services
    that rename or refuse ``CONFIG``. When Redis cannot be asked, the last
    answer stands (``/readyz`` reports Redis being out of reach on its own).
    """

    def __init__(self, check_every_s: float = 5.0) -> None:
        self.check_every_s = check_every_s
        self.problem: str | None = None  # why Redis is unsafe, None while it is not
        self._checked_at: float | None = None

    async def __call__(self, redis: RedisClient) -> str | None:
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < self.check_every_s:
            return self.problem
        self._checked_at = now
        try:
            async with asyncio.timeout(1.0):  # not wait_for: it may swallow a cancel (edge/app.py)
                infos = await info_per_master(redis, "memory")
        except Exception:
            return self.problem
        policies = sorted({str(info.get("maxmemory_policy", SAFE_EVICTION_POLICY)) for info in infos} - {SAFE_EVICTION_POLICY})
        problem = None
        if policies:
            problem = (
                f"Redis maxmemory-policy is {', '.join(policies)}, not {SAFE_EVICTION_POLICY}: under memory pressure Redis "
                "would evict idempotency keys, send leases and quota counters. "
                f"Set maxmemory-policy {SAFE_EVICTION_POLICY} (on every master)"
            )
        if problem != self.problem:
            if problem:
                log.error("not ready: %s", problem)
            else:
                log.info("Redis maxmemory-policy is %s again: ready as far as Redis goes", SAFE_EVICTION_POLICY)
        self.problem = problem
        return problem


class ServiceContext(Protocol):
    """What every service keeps in its app (under its own ``web.AppKey``): its settings and its Redis client."""

    settings: Settings
    redis: RedisClient


Ctx = TypeVar("Ctx", bound=ServiceContext)


def add_probes(
    app: web.Application,
    key: web.AppKey[Ctx],
    health: Callable[[Ctx], dict[str, Any]] = lambda _c: {},
    readiness: Callable[[Ctx], tuple[bool, dict[str, Any]]] = lambda _c: (True, {}),
) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` of the service whose context is ``app[key]``.

    ``/healthz`` names the node; ``health`` and ``readiness`` add the service's own fields (and readiness).
    """
    eviction = EvictionCheck()

    async def healthz(request: web.Request) -> web.Response:
        ctx = request.app[key]
        return json_response({"status": "ok", "pid": os.getpid(), "node": ctx.settings.node_id, **health(ctx)})

    async def readyz(request: web.Request) -> web.Response:
        ctx = request.app[key]
        redis = ctx.redis
        redis_ok = await redis_answers(redis)
        evicting = await eviction(redis) if redis_ok else eviction.problem
        own, details = readiness(ctx)
        ready = own and redis_ok and evicting is None
        body = {"status": "ready" if ready else "not_ready", "redis": redis_ok, **details}
        if evicting is not None:
            body["redis_problem"] = evicting
        return json_response(body, 200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)

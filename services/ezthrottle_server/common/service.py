"""Running a long-lived asyncio service: uvloop, signals, graceful stop.

A signal handler only sets an event; shutdown runs in ``finally``: the HTTP
site stops taking requests, then the app's cleanup contexts stop background
work in reverse order of start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(app: web.Application, host: str, port: int, *, on_started: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
        await site.start()
        log.info("listening on http://%s:%s", host, port)
        if on_started is not None:
            await on_started()
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        log.info("stopped")


def run(app_factory: Callable[[], Awaitable[web.Application]], host: str, port: int) -> None:
    install_uvloop()

    async def main() -> None:
        await serve(await app_factory(), host, port)

    asyncio.run(main())

"""Baselines for the end-to-end benchmark: the same work done with SAQ and with arq.

    python -m bench.baseline_workers saq --redis redis://127.0.0.1:6379/0 --concurrency 64
    python -m bench.baseline_workers arq --redis redis://127.0.0.1:6379/0 --concurrency 64

The task is what an EZThrottle job does minus the dam: send the request to
the target, then POST the result to the webhook. One pooled aiohttp session
per worker, uvloop, orjson, like our services. Each worker process sets
``bench:ready:<name>:<pid>`` in Redis once it is taking work, so the driver
waits on that rather than on a sleep.

Tuning, in the baselines' favour: concurrency as given (the driver uses the
same number for every system); arq polls its queue every 10 ms instead of
its default 500 ms (with 500 ms it would start at most one batch per half
second); SAQ dequeues with its default blocking move, which needs no tuning.
Neither retries (a loopback target does not fail) nor keeps results longer
than needed. ``--gc tuned`` runs the garbage collector as our services do once
serving (``common/service.py`` ``tune_gc``: what was built at start frozen, the
youngest generation collected after 10,000 net allocations), from the
worker's startup hook.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Any

import aiohttp
import orjson

READY_KEY = "bench:ready"
JSON = {"Content-Type": "application/json"}
GC_TUNED = False  # --gc tuned


async def _open(ctx: dict[str, Any]) -> None:
    ctx["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
    if GC_TUNED:
        from ezthrottle_server.common.service import tune_gc

        tune_gc()


async def _close(ctx: dict[str, Any]) -> None:
    await ctx["http"].close()


async def _call(http: aiohttp.ClientSession, method: str, url: str, body: str, hook: str, tag: str) -> int:
    async with http.request(method, url, data=body.encode(), headers=JSON) as resp:
        answer = await resp.read()
        status = resp.status
    payload = orjson.dumps(
        {
            "tag": tag,
            "status": "success",
            "response": {"status_code": status, "headers": {str(k).lower(): v for k, v in resp.headers.items()}, "body": answer.decode()},
        }
    )
    async with http.post(hook, data=payload, headers=JSON) as resp:
        await resp.read()
    return status


# -- SAQ -----------------------------------------------------------------------------


async def saq_call(ctx: dict[str, Any], *, method: str, url: str, body: str, hook: str, tag: str) -> int:
    return await _call(ctx["http"], method, url, body, hook, tag)


async def run_saq(redis_url: str, concurrency: int) -> None:
    from saq import Queue, Worker

    queue = Queue.from_url(redis_url, name="bench")
    worker = Worker(queue, functions=[("call", saq_call)], concurrency=concurrency, startup=_open, shutdown=_close)
    import redis.asyncio as aioredis

    async def announce() -> None:
        await asyncio.sleep(0.2)  # the worker's loops are up after its startup hook
        async with aioredis.from_url(redis_url) as r:
            await r.set(f"{READY_KEY}:saq:{os.getpid()}", 1, ex=600)

    announcer = asyncio.create_task(announce())
    try:
        await worker.start()  # until SIGTERM
    finally:
        announcer.cancel()
        await queue.disconnect()


# -- arq -------------------------------------------------------------------------------


async def arq_call(ctx: dict[str, Any], method: str, url: str, body: str, hook: str, tag: str) -> int:
    return await _call(ctx["http"], method, url, body, hook, tag)


async def run_arq(redis_url: str, concurrency: int) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    async def startup(ctx: dict[str, Any]) -> None:
        await _open(ctx)
        await ctx["redis"].set(f"{READY_KEY}:arq:{os.getpid()}", 1, ex=600)

    worker = Worker(
        functions=[func(arq_call, name="call", max_tries=1)],
        redis_settings=RedisSettings.from_dsn(redis_url),
        max_jobs=concurrency,
        poll_delay=0.01,
        keep_result=60,
        on_startup=startup,
        on_shutdown=_close,
        handle_signals=True,
        log_results=False,
    )
    try:
        await worker.async_run()  # until SIGTERM, which cancels it
    except asyncio.CancelledError:
        pass
    finally:
        await worker.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("system", choices=("saq", "arq"))
    p.add_argument("--redis", required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--gc", choices=("python", "tuned"), default="python", help="Python's collector as is, or as our services run it")
    a = p.parse_args()
    global GC_TUNED
    GC_TUNED = a.gc == "tuned"
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    runner = run_saq if a.system == "saq" else run_arq
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(a.redis, a.concurrency))


if __name__ == "__main__":
    main()

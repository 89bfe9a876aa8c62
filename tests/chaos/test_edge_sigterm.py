"""SIGTERM an edge: it stops taking work, finishes or hands back its
in-flight attempts within its grace period, and leaves nothing orphaned.

Two edges serve region iad. Edge A starts alone, takes sends of two domains:
short ones (done well within A's grace, ``EZT_STOP_GRACE_S=2``) and long ones
(longer than it). Edge B joins, new jobs keep arriving (so A is reading and
admitting its stream when the signal comes), then A gets SIGTERM. A must:

- start no send after the signal;
- finish its short sends, and hand the long ones back at once: B sends them
  again well before a lease could expire (the visibility timeout is 30 s
  here, so only a hand-back is fast enough);
- exit within its grace period (plus a little);
- leave no stream entry pending (an entry read but not admitted would wait
  out the 30 s visibility timeout), no pacing lease or queued job behind, and
  no heartbeat: every job completes (through B).
"""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pytest

from chaos.helpers import base_env, wait_until
from ezthrottle_server.common import keys
from ezthrottle_server.pacing.scope import SHARED
from support.jobs import get_job, submit
from support.targets import Target

pytestmark = pytest.mark.asyncio

GRACE_S = 2.0
SHORT_MS, LONG_MS = 300, 6000
SHORT_JOBS, LONG_JOBS = 30, 4


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_sigterm_an_edge_hands_back_or_finishes_its_sends_and_leaves_nothing_behind(procs, redis, redis_url, http, api_key, target):
    short_target, long_target = await Target().start(), await Target().start()
    try:
        await _run(procs, redis, redis_url, http, api_key, short_target, long_target, target)
    finally:
        await short_target.stop()
        await long_target.stop()


async def _run(procs, redis, redis_url, http, api_key, short_target, long_target, echo_target) -> None:
    env = base_env(
        redis_url,
        EZT_VISIBILITY_TIMEOUT_MS="30000",  # a dead node's leases would take 30 s: only a hand-back is fast
        EZT_PACING_DEFAULT_RPS="1000",
        EZT_PACING_MAX_RPS="1000",
        EZT_PACING_DEFAULT_MAX_CONCURRENT="4",
    )
    a = procs.start("edge", "edge-iad-a", {**env, "EZT_REGION": "iad", "EZT_STOP_GRACE_S": str(GRACE_S)})
    job = {"regions": ["iad"], "region_policy": "strict"}
    longs = [
        (await submit(http, a.url, api_key, {**job, "url": f"{long_target.url}/delay/{LONG_MS}", "body": f"l{i}"}))["job_id"]
        for i in range(LONG_JOBS)
    ]
    shorts = [
        (await submit(http, a.url, api_key, {**job, "url": f"{short_target.url}/delay/{SHORT_MS}", "body": f"s{i}"}))["job_id"]
        for i in range(SHORT_JOBS)
    ]
    await long_target.wait_for(LONG_JOBS, timeout_s=10)  # A is sending every long job

    b = procs.start("edge", "edge-iad-b", {**env, "EZT_REGION": "iad"})
    arriving: list[str] = []
    stop_arriving = asyncio.Event()

    async def keep_arriving(worker: int) -> None:  # through B, into iad's stream, which A reads too
        n = 0
        while not stop_arriving.is_set():
            body = {**job, "url": f"{echo_target.url}/echo", "body": f"arriving-{worker}-{n}"}
            arriving.append((await submit(http, b.url, api_key, body))["job_id"])
            n += 1

    loaders = [asyncio.create_task(keep_arriving(w)) for w in range(8)]
    await short_target.wait_for(len(short_target.requests) + 1, timeout_s=5)  # A still sends short jobs too
    await asyncio.sleep(0.3)
    termed_ms = now_ms()
    a.signal(signal.SIGTERM)
    await asyncio.to_thread(a.popen.wait, GRACE_S + 8)
    exited_s = (now_ms() - termed_ms) / 1000
    stop_arriving.set()
    await asyncio.gather(*loaders)
    assert a.popen.returncode == 0, f"edge A exited with {a.popen.returncode}"
    assert exited_s <= GRACE_S + 3, f"edge A took {exited_s:.1f}s to stop (grace {GRACE_S}s)"
    print(f"edge A stopped {exited_s:.2f}s after SIGTERM (grace {GRACE_S}s)")

    views = {}
    for job_id in longs + shorts + arriving:

        async def final(job_id=job_id):
            view = await get_job(http, b.url, api_key, job_id)
            return view if view["status"] in ("success", "failed") else None

        views[job_id] = await wait_until(final, 20, f"job {job_id} to finish")
    assert all(v["status"] == "success" for v in views.values())

    for view in views.values():
        for attempt in view["attempts"]:
            if attempt["node"] == "edge-iad-a":
                assert attempt["started_ms"] <= termed_ms + 100, f"A started a send {attempt['started_ms'] - termed_ms} ms after SIGTERM"
    for job_id in longs:  # handed back: B sent them again, at once rather than after 30 s
        [attempt] = views[job_id]["attempts"]
        assert attempt["node"] == "edge-iad-b", views[job_id]["attempts"]
        assert attempt["started_ms"] - termed_ms <= (GRACE_S + 2) * 1000, attempt
    assert len(long_target.requests) == 2 * LONG_JOBS  # A's cut-off sends, then B's
    assert any(a_["node"] == "edge-iad-a" for j in shorts for a_ in views[j]["attempts"]), "A finished no short send"

    # Nothing orphaned: no stream entry pending, no lease or waiting job, no heartbeat of A.
    stream, group = keys.region_stream(0, "iad"), keys.edge_group("iad")
    assert (await redis.xpending(stream, group))["pending"] == 0
    for target in (short_target, long_target, echo_target):
        domain = f"127.0.0.1:{target.port}"
        assert await redis.zcard(keys.pacing_running(domain, SHARED, "iad")) == 0
        assert await redis.zcard(keys.pacing_wait(domain, SHARED, "iad")) == 0
    assert "edge-iad-a" not in await redis.hkeys(keys.heartbeats())
    beats = {orjson.loads(v)["node"] for v in (await redis.hgetall(keys.heartbeats())).values()}
    assert beats == {"edge-iad-b"}

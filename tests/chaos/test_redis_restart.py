"""kill -9 Redis (``appendonly yes``, ``appendfsync always``) with jobs in
flight, restart it on the same port and data dir: every job answered 201
before the crash still completes.

With ``appendfsync always`` Redis writes and fsyncs the AOF before it
answers, so a job whose submission was answered is on disk. Attempts cut off
by the crash (their result could not be recorded) keep their pacing lease
unrenewed; when it expires the job is granted and sent again. While Redis is
down, new submissions get 503 ``unavailable``, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from chaos.helpers import base_env, wait_until
from ezthrottle_server.common import apikeys, keys
from ezthrottle_server.common.redisconn import connect
from support.jobs import auth, submit
from support.redis_server import free_port, redis_binary

pytestmark = pytest.mark.asyncio

JOBS = 40
SEND_MS = 400  # the target holds each request this long: sends are in flight when Redis dies


async def test_every_job_answered_201_completes_after_redis_is_killed_and_restarted(procs, http, target, tmp_path):
    port = free_port()
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    with contextlib.ExitStack() as stack:
        url, first_redis, _ = stack.enter_context(redis_binary(port, appendonly=True, data_dir=str(data_dir)))
        client = connect(url)
        key, _ = await apikeys.create_key(client, "acme")
        await client.aclose()
        env = base_env(url, EZT_PACING_DEFAULT_RPS="200", EZT_PACING_MAX_RPS="1000", EZT_PACING_DEFAULT_MAX_CONCURRENT="8")
        edge = procs.start("edge", "edge-iad-1", {**env, "EZT_REGION": "iad"})

        accepted = []
        for i in range(JOBS):
            job = await submit(http, edge.url, key, {"url": f"{target.url}/delay/{SEND_MS}", "body": f"aof-{i}"})
            accepted.append(job["job_id"])
        await target.wait_for(8, timeout_s=10)  # sends are in flight

        first_redis.kill()  # SIGKILL: no shutdown, no final AOF rewrite
        first_redis.wait(5)
        async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo"}, headers=auth(key)) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "unavailable" and resp.headers["Retry-After"]
        await asyncio.sleep(1.0)  # sends in flight finish against a dead Redis

        stack.enter_context(redis_binary(port, appendonly=True, data_dir=str(data_dir)))
        client = connect(url)
        try:
            assert await client.exists(*(keys.job(j) for j in accepted)) == JOBS, "accepted jobs were lost with Redis"

            async def all_final():
                states = [await client.hget(keys.job(j), "state") for j in accepted]
                return states if all(s in ("success", "failed") for s in states) else None

            started = time.monotonic()
            states = await wait_until(all_final, 30, "every accepted job to finish after the restart", every_s=0.2)
            assert states == ["success"] * JOBS
            assert len(target.requests) > JOBS  # the sends cut off by the crash were sent again
            assert time.monotonic() - started < 30
            async with http.get(f"{edge.url}/readyz") as resp:
                assert resp.status == 200
        finally:
            await client.aclose()

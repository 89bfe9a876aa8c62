"""A region that loses its only edge hands its jobs to the healthy regions, with no restart.

The real cluster (``python -m ezthrottle_server.devcluster up``, as ``make up-local``)
on free ports. Jobs are submitted to ``iad``'s edge only (they run in ``iad``,
the receiving edge's region), then that edge dies and is never restarted:

- ``kill -9`` with 1,000 jobs: every job is final within 10 s of the kill,
  through ``lax`` and ``ord``; the target sees each job once, except the
  attempts that were in flight at the crash (counted: at most the leases
  ``iad`` held then);
- ``region_policy: strict``: the jobs stay for their retry budget, then fail
  with ``region_unavailable``; none is sent from another region;
- SIGTERM: the edge hands its sends back, and no job is sent twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from chaos.helpers import wait_until
from ezthrottle_server.common import keys
from ezthrottle_server.common.redisconn import connect
from support.cluster import cli as cluster_cli
from support.cluster import cluster_files
from support.jobs import auth

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

DEAD = "iad"
SEND_MS = 20  # the target holds each request this long: sends are in flight at the kill


def cli(state: Path, regions: Path, *args: str) -> Any:
    return cluster_cli(state, regions, *args, env_extra={"EZT_STOP_GRACE_S": "2"}, inherit_ezt_env=False)


async def run_cluster(tmp_path: Path, target: Any, body: Any) -> None:
    state, regions = cluster_files(tmp_path)
    domain = f"127.0.0.1:{target.port}"
    (regions.parent / "domains.yaml").write_text(  # fast enough that queues drain in seconds, slow enough that iad holds a backlog
        yaml.safe_dump({"domains": {domain: {"rps": 400, "max_rps": 400, "burst": 20, "max_concurrent": 16, "max_concurrent_ceiling": 16}}})
    )
    up = await asyncio.to_thread(cli, state, regions, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    info = orjson.loads((state / "cluster.json").read_bytes())
    redis = connect(info["redis_url"])
    try:
        await wait_until(lambda: redis.hget(keys.pacing_conf(domain), "rps"), 10, "the coordinator to apply domains.yaml")
        await body(info, redis, domain)
    finally:
        await redis.aclose()
        down = await asyncio.to_thread(cli, state, regions, "down")
        assert down.returncode == 0, down.stderr


async def submit_all(http: aiohttp.ClientSession, info: dict[str, Any], payloads: list[dict[str, Any]]) -> list[str]:
    gate = asyncio.Semaphore(32)

    async def one(payload: dict[str, Any]) -> str:
        async with gate, http.post(f"{info['regions'][DEAD]}/api/v1/jobs", json=payload, headers=auth(info["api_key"])) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return body["job_id"]

    return list(await asyncio.gather(*(one(p) for p in payloads)))


async def records(redis: Any, job_ids: list[str]) -> list[list[str | None]]:
    async with redis.pipeline(transaction=False) as pipe:
        for j in job_ids:
            pipe.hmget(keys.job(j), "state", "winner", "error", "evacuated", "maybe_sent")
        return await pipe.execute()


async def all_final(redis: Any, job_ids: list[str]) -> list[list[str | None]] | None:
    got = await records(redis, job_ids)
    return got if all(r[0] in ("success", "failed") for r in got) else None


async def leases_of(redis: Any, domain: str, region: str) -> int:
    return int(await redis.zcard(keys.pacing_running(domain, "*", region)))


async def test_kill_9_the_only_edge_of_a_region_with_1000_jobs_queued(tmp_path, target, http):
    async def body(info: dict[str, Any], redis: Any, domain: str) -> None:
        job_ids = await submit_all(http, info, [{"url": f"{target.url}/delay/{SEND_MS}?n={i}"} for i in range(1000)])
        await target.wait_for(100, timeout_s=30)
        os.kill(info["pids"][f"edge-{DEAD}"], signal.SIGKILL)
        killed_at = time.monotonic()
        in_flight = await leases_of(redis, domain, DEAD)  # attempts cut off by the kill: the only ones sent twice
        open_at_kill = sum(r[0] not in ("success", "failed") for r in await records(redis, job_ids))
        assert open_at_kill >= 500, f"only {open_at_kill} jobs were open at the kill"

        final = await wait_until(lambda: all_final(redis, job_ids), 10, "every job final within 10 s of the kill", every_s=0.2)
        took_s = time.monotonic() - killed_at
        assert [r[0] for r in final].count("success") == 1000, Counter(r[0] for r in final)
        moved = [r for r in final if r[3]]
        assert len(moved) >= open_at_kill - in_flight - 50  # nearly every open job moved (a few finished before the region went down)
        assert {r[1] for r in moved} <= {"lax", "ord"}
        sends = Counter(r.query["n"] for r in target.matching(f"/delay/{SEND_MS}"))
        twice = [n for n, c in sends.items() if c > 1]
        assert len(sends) == 1000 and len(twice) <= in_flight, (len(twice), in_flight)
        assert max(sends.values()) <= 2
        print(
            f"{open_at_kill} of 1,000 open at the kill, {len(moved)} moved, {len(twice)} sent twice ({in_flight} in flight);"
            f" all final {took_s:.1f}s after it"
        )

    await run_cluster(tmp_path, target, body)


async def test_strict_jobs_wait_their_retry_budget_then_fail_region_unavailable(tmp_path, target, http):
    async def body(info: dict[str, Any], redis: Any, domain: str) -> None:
        payloads = [
            {"url": f"{target.url}/delay/{SEND_MS}?n={i}", "regions": [DEAD], "region_policy": "strict", "retry_policy": {"max_retries": 2}}
            for i in range(300)
        ]
        job_ids = await submit_all(http, info, payloads)
        await target.wait_for(50, timeout_s=30)
        os.kill(info["pids"][f"edge-{DEAD}"], signal.SIGKILL)
        in_flight = await leases_of(redis, domain, DEAD)
        final = await wait_until(lambda: all_final(redis, job_ids), 15, "every strict job final", every_s=0.2)
        failed = [r for r in final if r[0] == "failed"]
        assert failed and all(r[2] == "region_unavailable" and not r[3] for r in failed), Counter((r[0], r[2]) for r in final)
        assert all(r[1] == DEAD for r in final if r[0] == "success")
        sends = Counter(r.query["n"] for r in target.matching(f"/delay/{SEND_MS}"))
        assert len(sends) <= 300 - len(failed) + in_flight  # nothing was sent for them from another region

    await run_cluster(tmp_path, target, body)


async def test_sigterm_the_only_edge_of_a_region_sends_nothing_twice(tmp_path, target, http):
    async def body(info: dict[str, Any], redis: Any, domain: str) -> None:
        job_ids = await submit_all(http, info, [{"url": f"{target.url}/delay/{SEND_MS}?n={i}"} for i in range(400)])
        await target.wait_for(50, timeout_s=30)
        os.kill(info["pids"][f"edge-{DEAD}"], signal.SIGTERM)
        final = await wait_until(lambda: all_final(redis, job_ids), 20, "every job final after the SIGTERM", every_s=0.2)
        assert [r[0] for r in final].count("success") == 400
        assert any(r[3] for r in final) and {r[1] for r in final if r[3]} <= {"lax", "ord"}
        sends = Counter(r.query["n"] for r in target.matching(f"/delay/{SEND_MS}"))
        assert len(sends) == 400 and max(sends.values()) == 1

    await run_cluster(tmp_path, target, body)

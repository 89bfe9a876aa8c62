"""kill -9 an edge during 1,000 in-flight jobs raced across every region:
all 1,000 reach a final state, none is lost, each has exactly one winner.

The cluster is the real one, started the way ``make up-local`` starts it
(``python -m ezthrottle_server.devcluster up``) in a temp state dir on free ports.
The target's domain gets a high limit through ``domains.yaml`` beside
regions.yaml (the coordinator applies it), so the run takes seconds, not
the 2 requests/s a domain gets by default.

After the kill, ``up`` restarts only the dead edge; its region's stream must
then drain (nothing left pending) and no pacing lease of the region stays
behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
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

pytestmark = pytest.mark.asyncio

JOBS = 1000
REGIONS = ("iad", "lax", "ord")
KILLED = "iad"
SEND_MS = 20  # the target holds each request this long
DUE_AFTER_MS = 8000  # every job is due this long after the first submission (1,000 take 1-4 s)


def cli(state: Path, regions: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster_cli(state, regions, *args, env_extra={"EZT_VISIBILITY_TIMEOUT_MS": "1500"}, inherit_ezt_env=False)


async def test_kill_9_an_edge_during_1000_raced_jobs(tmp_path, target, http):
    state, regions = cluster_files(tmp_path)
    domain = f"127.0.0.1:{target.port}"
    (regions.parent / "domains.yaml").write_text(
        yaml.safe_dump(
            {"domains": {domain: {"rps": 2000, "max_rps": 2000, "burst": 50, "max_concurrent": 64, "max_concurrent_ceiling": 64}}}
        )
    )
    up = await asyncio.to_thread(cli, state, regions, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    info = orjson.loads((state / "cluster.json").read_bytes())
    redis = connect(info["redis_url"])
    try:
        await wait_until(lambda: redis.hget(keys.pacing_conf(domain), "rps"), 10, "the coordinator to apply domains.yaml")
        await _run(info, redis, target, http, state, regions)
    finally:
        await redis.aclose()
        down = await asyncio.to_thread(cli, state, regions, "down")
        assert down.returncode == 0, down.stderr


async def _run(info: dict[str, Any], redis: Any, target: Any, http: aiohttp.ClientSession, state: Path, regions: Path) -> None:
    key, edges = info["api_key"], info["regions"]
    submit_to = [edges[r] for r in REGIONS]
    # All due at one moment after every submission is in: a loaded machine's slow submissions no longer let the first
    # jobs finish before the last are in (462 of 1,000 open at the kill, once, when they were due at once).
    due_ms = int(time.time() * 1000) + DUE_AFTER_MS
    payloads = [
        {"url": f"{target.url}/delay/{SEND_MS}", "body": f"raced-{i}", "regions": list(REGIONS), "retry_at": due_ms} for i in range(JOBS)
    ]
    job_ids: list[str] = []
    gate = asyncio.Semaphore(32)

    async def submit(i: int) -> str:
        async with gate, http.post(f"{submit_to[i % 3]}/api/v1/jobs", json=payloads[i], headers=auth(key)) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return body["job_id"]

    job_ids = list(await asyncio.gather(*(submit(i) for i in range(JOBS))))
    assert len(set(job_ids)) == JOBS
    assert time.time() * 1000 < due_ms, f"1,000 submissions took over {DUE_AFTER_MS} ms: the jobs were due before the last was in"
    assert target.requests == [], "a job was sent before it was due"

    async def states() -> list[str | None]:
        async with redis.pipeline(transaction=False) as pipe:
            for j in job_ids:
                pipe.hget(keys.job(j), "state")
            return await pipe.execute()

    # Under way (sends in flight in every region), yet most jobs still open.
    await target.wait_for(JOBS // 8, timeout_s=30)
    os.kill(info["pids"][f"edge-{KILLED}"], signal.SIGKILL)
    killed_at = time.monotonic()
    open_at_kill = sum(s not in ("success", "failed") for s in await states())
    assert open_at_kill >= JOBS // 2, f"only {open_at_kill} jobs were still open when the edge was killed"

    async def all_final() -> list[str | None] | None:
        got = await states()
        return got if all(s in ("success", "failed") for s in got) else None

    final = await wait_until(all_final, 60, "all 1,000 jobs to reach a final state", every_s=0.25)
    assert final == ["success"] * JOBS, {s: final.count(s) for s in set(final)}

    async with redis.pipeline(transaction=False) as pipe:
        for j in job_ids:
            pipe.hget(keys.job(j), "winner")
            pipe.lrange(keys.attempts(j), 0, -1)
        rows = await pipe.execute()
    for j, winner, attempts in zip(job_ids, rows[0::2], rows[1::2]):
        decided = [a for a in map(orjson.loads, attempts) if a["decision"] == "success" and not a.get("lost")]
        assert len(decided) == 1 and winner == decided[0]["region"], (j, winner, attempts)
    print(f"{open_at_kill} of 1,000 raced jobs open at the kill; all final {time.monotonic() - killed_at:.1f}s after it")

    # `make up-local` again restarts only the dead edge; its region is left clean.
    restarted = await asyncio.to_thread(cli, state, regions, "up")
    assert restarted.returncode == 0, restarted.stderr
    domain = f"127.0.0.1:{target.port}"

    async def region_clean() -> bool:
        pending = [await redis.xpending(keys.region_stream(0, KILLED), keys.edge_group(KILLED))]
        running = await redis.zcard(keys.pacing_running(domain, "*", KILLED))
        waiting = await redis.zcard(keys.pacing_wait(domain, "*", KILLED))
        return all(p["pending"] == 0 for p in pending) and running == 0 and waiting == 0

    await wait_until(region_clean, 15, f"{KILLED}'s stream and pacing leases to be clean after the restart", every_s=0.2)

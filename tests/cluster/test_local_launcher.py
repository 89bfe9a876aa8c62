"""`make up-local` against a Redis Cluster: ``REDIS_URL=redis+cluster://…`` and
``EZT_PARTITIONS=4`` reach every process, which run jobs the way they do on
one server (and, watched by the slot audit, never cross a slot)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from cluster.helpers import PARTITIONS, keys_per_partition
from ezthrottle import AsyncEZThrottle
from ezthrottle_server.common import keys
from support.cluster import cli, cluster_files
from support.jobs import sdk_wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


def _cli(state: Path, regions: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    extra = {"REDIS_URL": redis_url, "EZT_PARTITIONS": str(PARTITIONS), "EZT_VISIBILITY_TIMEOUT_MS": "1500"}
    return cli(state, regions, *args, env_extra=extra, inherit_ezt_env=False)


async def test_the_local_launcher_runs_every_service_on_the_cluster(tmp_path, redis, redis_url, target):
    state, regions = cluster_files(tmp_path)
    up = _cli(state, regions, redis_url, "up")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        info: dict[str, Any] = orjson.loads((state / "cluster.json").read_bytes())
        assert info["redis_url"] == redis_url and "redis" not in info["pids"]  # no embedded Redis: the cluster's
        async with AsyncEZThrottle(api_key=info["api_key"], base_url=info["regions"]["lax"]) as client:
            ids = []
            for p, (k,) in keys_per_partition("demo", 1, "launcher").items():
                job = await client.submit_job(url=f"{target.url}/echo?p={p}", idempotent_key=k, regions=["iad", "lax", "ord"])
                assert keys.job_partition(job["job_id"]) == p
                ids.append(job["job_id"])
            for job_id in ids:
                view = await sdk_wait_final(client, job_id, timeout_s=20)
                assert view["status"] == "success" and view["result"]["status_code"] == 200
    finally:
        down = _cli(state, regions, redis_url, "down")
        assert down.returncode == 0, down.stderr

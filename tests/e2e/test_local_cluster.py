"""The real processes, started the way `make up-local` starts them, driven with the SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ezthrottle import AsyncEZThrottle, AuthenticationError, Step, ValidationError
from support.cluster import local_cluster, pids
from support.jobs import sdk_wait_final

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A whole local cluster on free ports, in its own state directory."""
    with local_cluster(tmp_path_factory.mktemp("cluster"), {"EZT_VISIBILITY_TIMEOUT_MS": "1500"}) as info:
        yield info
    for pid in info["pids"].values():  # `down` stopped every process
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_cluster_json_lists_every_region_and_the_key(cluster):
    assert set(cluster["regions"]) == {"iad", "lax", "ord"}
    assert cluster["api_key"].startswith("ezt_live_")
    assert cluster["redis_url"].startswith("redis://127.0.0.1:")
    assert set(cluster["pids"]) == {"redis", "coordinator", "delivery", "edge-iad", "edge-lax", "edge-ord"}


def test_the_printed_example_runs(cluster):
    example = cluster["stdout"].split("Try it", 1)[1].split("\n", 1)[1]
    assert cluster["api_key"] in example
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert job_id.startswith("job_")


def test_up_twice_does_not_start_a_second_cluster(cluster):
    again = cluster["cli"]("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert pids(cluster) == cluster["pids"]


@pytest.mark.asyncio
async def test_sdk_submits_and_an_edge_executes_against_a_loopback_target(cluster, target):
    async with AsyncEZThrottle(api_key=cluster["api_key"], base_url=cluster["regions"]["lax"]) as client:
        result = await Step(client).url(f"{target.url}/echo").method("POST").body('{"n": 1}').execute_async()
        assert result["status"] == "queued"
        view = await sdk_wait_final(client, result["job_id"], timeout_s=15)
        assert view["status"] == "success"
        assert view["result"]["status_code"] == 200
        assert view["attempts"][0]["region"] == "lax"
        [req] = target.matching("/echo")
        assert req.body == b'{"n": 1}'


@pytest.mark.asyncio
async def test_sdk_gets_clear_errors(cluster):
    async with AsyncEZThrottle(api_key=cluster["api_key"], base_url=cluster["regions"]["iad"]) as client:
        with pytest.raises(ValidationError) as exc:
            await client.submit_job(url="http://127.0.0.1:1/x", regions=["mars"])
        assert "mars" in str(exc.value)
    async with AsyncEZThrottle(api_key="ezt_live_wrong", base_url=cluster["regions"]["iad"]) as client:
        with pytest.raises(AuthenticationError):
            await client.submit_job(url="http://127.0.0.1:1/x")


@pytest.mark.asyncio
async def test_kill_9_an_edge_mid_job_and_its_job_still_completes(cluster, target):
    async with AsyncEZThrottle(api_key=cluster["api_key"], base_url=cluster["regions"]["ord"]) as client:
        result = await client.submit_job(url=f"{target.url}/delay/3000", idempotent_key="kill-me")
        await target.wait_for(1, "/delay/3000", timeout_s=10)
        os.kill(pids(cluster)["edge-ord"], signal.SIGKILL)
        restarted = cluster["cli"]("up")  # `make up-local` restarts only what died
        assert restarted.returncode == 0, restarted.stderr
        view = await sdk_wait_final(client, result["job_id"], timeout_s=30)
        assert view["status"] == "success"
        assert len(target.matching("/delay/3000")) == 2  # the killed attempt, then the reclaimed one
    cluster["pids"] = pids(cluster)

"""Several worker processes per node on one port (EZT_EDGE_WORKERS, EZT_DELIVERY_WORKERS; common/workers.py).

Real processes on loopback: the supervisor and its workers answer on one port
from several pids, the node's /metrics adds the workers up, a worker killed
with SIGKILL loses no accepted job and is started again, and SIGTERM drains
and stops them all.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ezthrottle_server.common.metrics import FLUSH_EVERY_S
from support.jobs import get_job, submit, wait_final
from support.redis_server import free_port
from support.services import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

WORKERS = 2
FAST_LEASE_MS = 1500  # a killed worker's sends come back this soon


class Node:
    """A supervisor of ``WORKERS`` processes of one role, run as ``python -m``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def health(self) -> dict[str, Any]:
        """``/healthz`` on a new connection (the kernel picks the worker by connection)."""
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
            fresh.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def workers(self, want: int = WORKERS, tries: int = 200) -> dict[str, int]:
        """The workers that answered (node id -> pid), asking until ``want`` have or ``tries`` run out."""
        seen: dict[str, int] = {}
        for _ in range(tries):
            body = await self.health()
            seen[body["node"]] = body["pid"]
            if len(seen) >= want:
                break
        return seen

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


def sample(text: str, name: str, labels: str = "") -> list[float]:
    """Every value of series ``name{labels}`` in a Prometheus text page (one per series)."""
    pattern = re.compile(
        rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$" if labels else rf"^{re.escape(name)}(?:\{{\}})? (\S+)$", re.M
    )
    return [float(v) for v in pattern.findall(text)]


def env_for(redis_url: str, role: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZT_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {
        "REDIS_URL": redis_url,
        "EZT_REGIONS_FILE": str(REPO / "regions.yaml"),
        "EZT_SIMULATE_LATENCY": "0",
        "EZT_PORT": str(port),
        "EZT_NODE_ID": f"{role}-node",
        "EZT_EDGE_WORKERS": str(WORKERS),
        "EZT_DELIVERY_WORKERS": str(WORKERS),
        "EZT_VISIBILITY_TIMEOUT_MS": str(FAST_LEASE_MS),
        "EZT_PACING_DEFAULT_RPS": "100",
        "EZT_PACING_DEFAULT_MAX_CONCURRENT": "16",
        "EZT_DELIVERY_BACKOFF_BASE_S": "0.05",
        "EZT_DELIVERY_BACKOFF_CAP_S": "0.2",
        "EZT_DELIVERY_POLL_S": "0.02",
    }
    return env | extra


StartNode = Callable[..., Awaitable[Node]]


@pytest_asyncio.fixture
async def start_node(redis_url: str, tmp_path: Path) -> AsyncIterator[StartNode]:
    started: list[Node] = []

    async def start(role: str, **extra: str) -> Node:
        port = free_port()
        with open(tmp_path / f"{role}.log", "ab") as log:  # the supervisor's and its workers' logs
            proc = subprocess.Popen(
                [sys.executable, "-m", f"ezthrottle_server.{role}"],
                env=env_for(redis_url, role, port, **extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        node = Node(proc, port)
        started.append(node)
        async with asyncio.timeout(30):
            while True:
                assert proc.poll() is None, f"{role} exited during start with {proc.returncode}"
                try:
                    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/readyz") as resp:
                        if resp.status == 200:
                            return node
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    try:
        yield start
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                try:
                    node.proc.wait(30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pids: list[int], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not all(gone(p) for p in pids):
            await asyncio.sleep(0.05)


async def submit_fresh(url: str, key: str, payloads: list[dict[str, Any]]) -> list[str]:
    """Submit each payload on a new connection, so the kernel spreads them over the workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        return [(await submit(fresh, url, key, p))["job_id"] for p in payloads]


async def test_an_edge_of_two_workers_serves_one_port_sums_its_metrics_survives_a_kill_and_drains(
    start_node: StartNode, start_edge: Any, http: aiohttp.ClientSession, api_key: str, target: Any
) -> None:
    node = await start_node("edge", EZT_REGION="iad")
    workers = await node.workers()
    assert sorted(workers) == ["edge-node-w0", "edge-node-w1"]  # each worker its own node id
    assert len(set(workers.values())) == WORKERS and node.proc.pid not in workers.values()

    # Jobs accepted by both workers all finish, and the node's counters are the sum of its workers'.
    ids = await submit_fresh(node.url, api_key, [{"url": f"{target.url}/echo?n={i}"} for i in range(30)])
    views = [await wait_final(http, node.url, api_key, j, timeout_s=20) for j in ids]
    assert {v["status"] for v in views} == {"success"}
    assert {v["attempts"][-1]["node"] for v in views} == set(workers)  # both workers sent some
    await asyncio.sleep(2 * FLUSH_EVERY_S)  # the other worker's counts as of its last write (common/metrics.py)
    assert sample(await node.metrics(), "ezt_jobs_submitted_total", 'region="iad"') == [30.0]

    # SIGKILL one worker with sends in flight: every accepted job still finishes, and it is started again.
    slow = await submit_fresh(node.url, api_key, [{"url": f"{target.url}/delay/1000?slow={i}"} for i in range(10)])
    await target.wait_for(31, timeout_s=10)  # some of them are being sent
    await asyncio.sleep(2 * FLUSH_EVERY_S)  # what a worker killed outright keeps is what it has written
    os.kill(workers["edge-node-w0"], signal.SIGKILL)
    for job_id in slow:
        view = await wait_final(http, node.url, api_key, job_id, timeout_s=30)
        assert view["status"] == "success", view
    sent = {r.query["slow"] for r in target.matching("/delay/1000")}
    assert sent == {str(i) for i in range(10)}
    async with asyncio.timeout(20):
        while True:
            again = await node.workers()
            if len(again) == WORKERS and again["edge-node-w0"] != workers["edge-node-w0"]:
                break
            await asyncio.sleep(0.1)
    assert again["edge-node-w1"] == workers["edge-node-w1"]
    # the dead worker's counts stay in the node's totals
    assert sample(await node.metrics(), "ezt_jobs_submitted_total", 'region="iad"') == [40.0]
    assert node.proc.poll() is None

    # SIGTERM with sends in flight on both workers: they finish them (drain), then all stop and the
    # supervisor exits 0; nothing answers on the port.
    last = await submit_fresh(node.url, api_key, [{"url": f"{target.url}/delay/1500?last={i}"} for i in range(6)])
    async with asyncio.timeout(10):
        while len({r.query["last"] for r in target.matching("/delay/1500")}) < 6:
            await asyncio.sleep(0.02)
    node.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
    await wait_gone(list(again.values()))
    with pytest.raises(aiohttp.ClientConnectionError):
        await node.health()
    reader = await start_edge("iad")  # reads the records; the drained sends need nobody else
    for job_id in last:
        view = await get_job(http, reader.url, api_key, job_id)
        assert view["status"] == "success" and len(view["attempts"]) == 1, view
        assert view["attempts"][0]["node"] in set(workers)


async def _delivered_at_least(node: Any, n: int, timeout_s: float = 20) -> float:
    """The node's count of delivered webhooks, once it is at least ``n`` (bounded)."""
    async with asyncio.timeout(timeout_s):
        while True:
            [delivered] = sample(await node.metrics(), "ezt_webhook_deliveries_total", 'outcome="delivered"')
            if delivered >= n:
                return float(delivered)
            await asyncio.sleep(0.1)


async def test_a_delivery_node_of_two_workers_delivers_restarts_a_killed_worker_and_stops(
    start_node: StartNode, start_edge: Any, http: aiohttp.ClientSession, api_key: str, target: Any, receiver: Any
) -> None:
    node = await start_node("delivery")
    workers = await node.workers()
    assert sorted(workers) == ["delivery-node-w0", "delivery-node-w1"]
    page = await node.metrics()
    # one series for the node, not one per worker process
    assert len(sample(page, "ezt_webhook_deliveries_total", 'outcome="delivered"')) == 1
    assert len(sample(page, "ezt_webhook_inflight")) == 1

    edge = await start_edge("iad", edge_delivers_webhooks=False)  # every webhook goes through the delivery node
    jobs = [
        await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n={i}", "webhooks": [{"url": f"{receiver.url}/hook/{i}"}]})
        for i in range(6)
    ]
    await receiver.wait_for(6, timeout_s=20)
    # Kill once the six are counted: a worker killed between a POST's record and its count loses that count (the
    # hook, recorded delivered, is not sent again), which is not what this test is about.
    await _delivered_at_least(node, 6)

    os.kill(workers["delivery-node-w1"], signal.SIGKILL)
    async with asyncio.timeout(20):
        while True:
            again = await node.workers()
            if len(again) == WORKERS and again["delivery-node-w1"] != workers["delivery-node-w1"]:
                break
            await asyncio.sleep(0.1)
    more = [
        await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?more={i}", "webhooks": [{"url": f"{receiver.url}/more/{i}"}]})
        for i in range(4)
    ]
    want = {f"/hook/{i}" for i in range(6)} | {f"/more/{i}" for i in range(4)}
    async with asyncio.timeout(20):  # at least once: a hook the killed worker had in hand may come twice
        while not want <= {r.path for r in receiver.requests}:
            await asyncio.sleep(0.05)
    assert len({j["job_id"] for j in jobs + more}) == 10
    # the node's count adds up its workers, the killed one's included; a POST is counted once its answer is
    # recorded, a moment after the receiver has it: wait (bounded) for the count to reach every job
    delivered = await _delivered_at_least(node, 10)
    assert 10 <= delivered <= len(receiver.requests)

    node.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
    await wait_gone(list(again.values()))

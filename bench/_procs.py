"""Processes for benchmarks: a throwaway Redis, service processes, readiness waits.

Everything listens on 127.0.0.1; every process is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ezthrottle_server.devcluster.cluster import find_redis_server

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


@contextlib.contextmanager
def redis_server(extra: list[str] | None = None) -> Iterator[str]:
    port = free_port()
    data = tempfile.mkdtemp(prefix="ezt-bench-redis-")
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*argv, *(extra or [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port) as r:
                    r.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def service(module: str, env: dict[str, str], ready_url: str, log_name: str) -> Iterator[subprocess.Popen[bytes]]:
    log_dir = REPO / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{log_name}.log", "wb") as log:
        # One process per service unless the scenario asks for more (EZT_EDGE_WORKERS in env): its pid is the service's
        defaults = {"EZT_EDGE_WORKERS": "1", "EZT_DELIVERY_WORKERS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", module], env={**defaults, **os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(ready_url)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def edge_env(redis_url: str, region: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "EZT_REGIONS_FILE": str(REPO / "regions.yaml"),
        "EZT_REGION": region,
        "EZT_PORT": str(port),
        "EZT_NODE_ID": f"bench-edge-{region}-{port}",
        "EZT_SIMULATE_LATENCY": "0",
        **extra,
    }


async def create_key(redis_url: str, customer: str = "bench") -> str:
    from ezthrottle_server.common import apikeys
    from ezthrottle_server.common.redisconn import connect

    r = connect(redis_url)
    try:
        key, _ = await apikeys.create_key(r, customer)
        await r.hset(f"ezt:customer:{customer}", "tier", "enterprise")  # no cap in benchmarks
        return key
    finally:
        await r.aclose()

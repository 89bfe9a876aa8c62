"""Exactly one coordinator is active; kill -9 it and the standby takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from support.redis_server import free_port
from support.services import REGIONS_FILE

pytestmark = [pytest.mark.e2e]


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def coordinators(redis_url: str) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    import redis as sync_redis

    with sync_redis.Redis.from_url(redis_url) as r:
        r.flushall()
    procs = []
    for i in (1, 2):
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "EZT_REGIONS_FILE": str(REGIONS_FILE),
            "EZT_NODE_ID": f"coord-{i}",
            "EZT_PORT": str(port),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ezthrottle_server.coordinator"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append((proc, port))
        _wait(lambda p=port: _health(p), 15, f"coordinator {i} to answer")
    try:
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def test_one_leader_and_takeover_after_kill_9(coordinators):
    (first, p1), (second, p2) = coordinators
    leaders = _wait(lambda: [p for p in (p1, p2) if (_health(p) or {}).get("leader")] or None, 5, "a leader")
    assert len(leaders) == 1
    time.sleep(1.0)  # and it stays one
    assert [p for p in (p1, p2) if (_health(p) or {}).get("leader")] == leaders

    leader_proc, standby_port = (first, p2) if leaders[0] == p1 else (second, p1)
    killed_at = time.monotonic()
    os.kill(leader_proc.pid, signal.SIGKILL)
    leader_proc.wait(5)
    _wait(lambda: (_health(standby_port) or {}).get("leader"), 8, "the standby to take over")
    took_over_s = time.monotonic() - killed_at
    assert took_over_s <= 5.0, f"takeover took {took_over_s:.2f}s"

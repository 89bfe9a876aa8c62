"""Helpers of the chaos tests: service processes, polling with a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from support.redis_server import free_port
from support.services import REGIONS_FILE

# Every chaos test shares these: a dead node's work is taken over within
# 1.5 s, and no simulated latency.
FAST_ENV = {"EZT_VISIBILITY_TIMEOUT_MS": "1500", "EZT_SIMULATE_LATENCY": "0"}


def base_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZT_") and k != "REDIS_URL"}
    env.update({"REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE), "PYTHONUNBUFFERED": "1", **FAST_ENV})
    env.update(extra)
    return env


def http_json(url: str, timeout_s: float = 1.0) -> tuple[int, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.popen = popen
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def health(self) -> dict[str, Any] | None:
        got = http_json(f"{self.url}/healthz")
        return got[1] if got and got[0] == 200 else None

    async def health_async(self, http: Any) -> dict[str, Any] | None:
        """``/healthz`` without blocking the test's event loop (where targets run)."""
        try:
            async with http.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None


class Procs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Proc] = []

    def start(
        self, role: str, name: str, env: dict[str, str], *, port: int | None = None, ready: bool = True, timeout_s: float = 30
    ) -> Proc:
        port = port or free_port()
        # one process per node: signals (SIGSTOP, SIGKILL) reach the node itself, not a supervisor
        env = {"EZT_EDGE_WORKERS": "1", "EZT_DELIVERY_WORKERS": "1", **env, "EZT_PORT": str(port), "EZT_NODE_ID": name}
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", f"ezthrottle_server.{role}"], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        proc = Proc(name, popen, port, log)
        self.started.append(proc)
        if ready:
            self.wait_ready(proc, timeout_s)
        return proc

    def wait_ready(self, proc: Proc, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited during start:\n{tail(proc.log)}")
            got = http_json(f"{proc.url}/readyz")
            if got and got[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"{proc.name} not ready within {timeout_s}s:\n{tail(proc.log)}")

    def stop_all(self) -> None:
        for proc in self.started:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.started:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.popen.wait(5)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


async def wait_until(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")

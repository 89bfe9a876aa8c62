"""A strict target in a process of its own: 429 to a request that finds ``limit`` others in the last second.

It counts as many real APIs do: a sliding window, clocked at each request's
arrival. It runs apart from the test's event loop (which also runs three
edges and the test's own polling), as a real target does: a request is
clocked when it arrives, not when a loop shared with its senders gets to it.

``python strict_target.py LIMIT`` prints the port it listens on (127.0.0.1),
then serves ``GET /strict`` and ``GET /stats`` (the arrivals, monotonic
seconds, and how many were refused) until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque

import aiohttp
from aiohttp import web


class StrictApp:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.recent: deque[float] = deque()
        self.arrivals: list[float] = []
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_get("/strict", self._strict)
        self.app.router.add_get("/stats", self._stats)

    async def _strict(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        self.arrivals.append(now)
        if len(self.recent) >= self.limit:
            self.refused += 1
            return web.Response(status=429, text="too many requests in the last second")
        self.recent.append(now)
        return web.Response(text="ok")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"arrivals": self.arrivals, "refused": self.refused})


async def _serve(limit: int) -> None:
    runner = web.AppRunner(StrictApp(limit).app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the test closes stdin (or dies): stop
    await runner.cleanup()


class StrictTarget:
    """The test's handle on a strict target process (``start()``, ``stats()``, ``stop()``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StrictTarget:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, str(self.limit), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(20):
            line = await self._proc.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the strict target exited ({await self._proc.wait()}) without a port")
        self.port = int(line)
        return self

    async def stats(self) -> tuple[list[float], int]:
        """The arrivals (sorted, seconds) and how many were refused."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/stats") as resp:
            body = await resp.json()
        return sorted(body["arrivals"]), int(body["refused"])

    async def stop(self) -> None:
        if self._proc is None:
            return
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))

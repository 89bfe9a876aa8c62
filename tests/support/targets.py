"""Real aiohttp servers on loopback: a programmable target and a webhook receiver.

Both record every request they get, so tests assert on what really arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web

S = TypeVar("S", bound="_Server")


@asynccontextmanager
async def serving(server: S) -> AsyncIterator[S]:
    """``server``, started for the block and stopped after it (a fixture's body)."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Server:
    def __init__(self) -> None:
        self.app = web.Application()
        self.requests: list[Received] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> _Server:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request) -> Received:
        rec = Received(request.method, request.path, dict(request.query), dict(request.headers), await request.read())
        self.requests.append(rec)
        async with self._arrived:
            self._arrived.notify_all()
        return rec

    def matching(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout_s: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests (to ``path`` if given) have arrived."""

        def have() -> list[Received]:
            return [r for r in self.requests if path is None or r.path == path]

        async with asyncio.timeout(timeout_s):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(have()) >= count)
        return have()


class Target(_Server):
    """A target API.

    - ``/status/{code}``: answers that status; ``?h=Name:Value`` adds headers.
    - ``/echo``: answers 200 with the request as JSON.
    - ``/delay/{ms}``: answers 200 after a delay.
    - ``/big/{n}``: answers n bytes.
    - ``/redirect?to=URL&code=302``: a redirect.
    - ``/script/{name}``: answers the next scripted (status, headers) for ``name``
      (see :meth:`script`), then 200 once the script runs out.
    """

    def __init__(self) -> None:
        super().__init__()
        self._scripts: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        self.app.router.add_route("*", "/status/{code}", self._status)
        self.app.router.add_route("*", "/echo", self._echo)
        self.app.router.add_route("*", "/delay/{ms}", self._delay)
        self.app.router.add_route("*", "/big/{n}", self._big)
        self.app.router.add_route("*", "/redirect", self._redirect)
        self.app.router.add_route("*", "/script/{name}", self._script)

    def script(self, name: str, *answers: int | tuple[int, dict[str, str]]) -> str:
        """Queue answers for ``/script/{name}``; returns that URL."""
        for a in answers:
            self._scripts[name].append(a if isinstance(a, tuple) else (a, {}))
        return f"{self.url}/script/{name}"

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        headers = {}
        for h in request.query.getall("h", []):
            name, _, value = h.partition(":")
            headers[name] = value
        return web.Response(status=int(request.match_info["code"]), headers=headers, text=f"status {request.match_info['code']}")

    async def _echo(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        return web.json_response(
            {"method": rec.method, "path": rec.path, "query": rec.query, "headers": rec.headers, "body": rec.body.decode(errors="replace")}
        )

    async def _delay(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.Response(text="slow ok")

    async def _big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=int(request.query.get("code", "302")), headers={"Location": request.query["to"]})

    async def _script(self, request: web.Request) -> web.Response:
        await self._record(request)
        queue = self._scripts[request.match_info["name"]]
        status, headers = queue.popleft() if queue else (200, {})
        return web.Response(status=status, headers=headers, text=f"scripted {status}")


class WebhookReceiver(_Server):
    """Accepts webhook POSTs on any path; answers ``status`` (200 by default)."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.app.router.add_route("*", "/{tail:.*}", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"ok": self.status < 300}, status=self.status)

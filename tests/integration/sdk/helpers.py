"""Helpers for the SDK's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import ClientSession, web


@asynccontextmanager
async def older_edge(edge_url: str, seen: list[str]) -> AsyncIterator[str]:
    """A loopback front of ``edge_url`` as an edge older than ``POST /api/v1/jobs/batch`` (404 there); every other
    request is passed on. Each request's ``"METHOD /path"`` is appended to ``seen``. Yields the front's URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        if request.path == "/api/v1/jobs/batch":
            return web.json_response({"error": {"code": "not_found", "message": "no such route"}}, status=404)
        async with (
            ClientSession() as http,
            http.request(
                request.method,
                edge_url + request.path_qs,
                data=await request.read(),
                headers={"Authorization": request.headers["Authorization"], "Content-Type": "application/json"},
            ) as resp,
        ):
            return web.Response(
                status=resp.status,
                body=await resp.read(),
                headers={
                    "Content-Type": "application/json",
                    **({"Retry-After": resp.headers["Retry-After"]} if "Retry-After" in resp.headers else {}),
                },
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()

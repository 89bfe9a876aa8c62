"""A loopback target and webhook receiver in one process, for end-to-end benchmarks.

    EZT_PORT=9000 python -m bench.sink      (EZT_EXTRA_PORTS=9001,9002: more ports, each a target domain)

- ``* /t/<tag>``: the target. Answers 200 with a small JSON body and records
  when the request arrived (``time.time()``, seconds).
- ``* /f/<tag>``: a target that answers 503 to a tag's first request and 200
  after (a job that takes two attempts: ``bench.capacity``'s cost per attempt).
- ``POST /hook``: the webhook receiver. Reads the job's tag from the body
  (EZThrottle's payload: ``metadata.tag``; the baselines send ``{"tag"}``)
  and records when it arrived.
- ``GET /stats``: counts; ``GET /arrivals``: ``{"target": {tag: t}, "hooks":
  {tag: t}}``; ``POST /reset``: forget everything.

It runs in its own process so that the clients' load does not skew its clock
readings, and every system under test talks to the same one.
"""

from __future__ import annotations

import asyncio
import os
import time

import orjson
from aiohttp import web

ANSWER = orjson.dumps({"ok": True, "charged": 1})


class Sink:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.target: dict[str, float] = {}
        self.failed: set[str] = set()
        self.hooks: dict[str, float] = {}
        self.target_requests = 0
        self.hook_requests = 0

    async def target_hit(self, request: web.Request) -> web.Response:
        now = time.time()
        self.target_requests += 1
        self.target.setdefault(request.match_info["tag"], now)
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def fail_once(self, request: web.Request) -> web.Response:
        tag = request.match_info["tag"]
        await request.read()
        if tag not in self.failed:
            self.failed.add(tag)
            self.target_requests += 1
            return web.Response(status=503, body=b'{"error":"try again"}', content_type="application/json")
        return await self.target_hit(request)

    async def hook(self, request: web.Request) -> web.Response:
        now = time.time()
        self.hook_requests += 1
        body = orjson.loads(await request.read())
        tag = body.get("tag") or (body.get("metadata") or {}).get("tag")
        if tag is not None:
            self.hooks.setdefault(str(tag), now)
        return web.Response(status=204)

    async def stats(self, _request: web.Request) -> web.Response:
        body = {
            "target": len(self.target),
            "hooks": len(self.hooks),
            "target_requests": self.target_requests,
            "hook_requests": self.hook_requests,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def arrivals(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"target": self.target, "hooks": self.hooks}), content_type="application/json")

    async def reset(self, _request: web.Request) -> web.Response:
        self.clear()
        return web.Response(status=204)


async def ready(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sink = Sink()
    app = web.Application()
    app.router.add_route("*", "/t/{tag}", sink.target_hit)
    app.router.add_route("*", "/f/{tag}", sink.fail_once)
    app.router.add_post("/hook", sink.hook)
    app.router.add_get("/stats", sink.stats)
    app.router.add_get("/arrivals", sink.arrivals)
    app.router.add_post("/reset", sink.reset)
    app.router.add_get("/readyz", ready)
    extra = [int(p) for p in os.environ.get("EZT_EXTRA_PORTS", "").split(",") if p]  # more target domains, one process
    if not extra:
        web.run_app(app, host="127.0.0.1", port=int(os.environ["EZT_PORT"]), access_log=None, print=None, backlog=1024)
        return

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in [int(os.environ["EZT_PORT"]), *extra]:
            await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

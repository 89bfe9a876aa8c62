"""The ceiling for submission throughput: a bare aiohttp endpoint that parses
the same JSON body and answers 201, with no auth, validation or Redis."""

from __future__ import annotations

import os
import uuid

import orjson
from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    body = orjson.dumps({"job_id": uuid.uuid4().hex, "status": "queued", "idempotent_key": "x"})
    return web.Response(body=body, status=201, content_type="application/json")


async def ready(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/api/v1/jobs", accept)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["EZT_PORT"]), access_log=None, print=None)


if __name__ == "__main__":
    main()

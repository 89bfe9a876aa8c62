"""With Redis gone, the edge answers 503 (never 500) and accepts nothing."""

import asyncio

import pytest

from ezthrottle_server.common import apikeys
from ezthrottle_server.common.redisconn import connect
from ezthrottle_server.edge.app import create_app
from support.jobs import auth
from support.redis_server import redis_binary
from support.services import RunningApp, make_settings

pytestmark = pytest.mark.asyncio


async def test_submissions_get_503_while_redis_is_down(http):
    with redis_binary() as (url, proc, _dir):
        r = connect(url)
        key, _ = await apikeys.create_key(r, "acme")
        await r.aclose()
        settings = make_settings("edge", url, "iad", node_id="edge-redis-down", api_key_cache_s=60.0)
        edge = await RunningApp(create_app(settings), settings).start()
        try:
            async with http.post(f"{edge.url}/api/v1/jobs", json={"url": "http://127.0.0.1:9/x"}, headers=auth(key)) as resp:
                assert resp.status == 201
            proc.kill()
            await asyncio.to_thread(proc.wait)
            async with http.post(f"{edge.url}/api/v1/jobs", json={"url": "http://127.0.0.1:9/y"}, headers=auth(key)) as resp:
                assert resp.status == 503
                body = await resp.json()
                assert resp.headers["Retry-After"] == "1"
            assert body["error"]["code"] == "unavailable"
            async with http.get(f"{edge.url}/readyz") as resp:
                assert resp.status == 503
        finally:
            await edge.stop()

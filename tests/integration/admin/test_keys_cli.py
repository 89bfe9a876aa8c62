"""`ezthrottle-admin keys …` against a real Redis and a real edge."""

import asyncio
import subprocess
import sys

import orjson
import pytest

from ezthrottle_server.common import apikeys, keys
from support.jobs import auth

pytestmark = pytest.mark.asyncio


async def admin(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30)


async def test_create_use_list_and_revoke_a_key(redis, redis_url, start_edge, http, target):
    edge = await start_edge("iad", api_key_cache_s=0.0)
    created = await admin(redis_url, "--json", "keys", "create", "--customer", "acme")
    assert created.returncode == 0, created.stderr
    out = orjson.loads(created.stdout)
    key, key_id = out["api_key"], out["key_id"]
    assert out["customer"] == "acme"

    # stored hashed: the clear key appears nowhere in Redis
    for k in await redis.keys("*"):
        if await redis.type(k) == "hash":
            assert key not in (await redis.hgetall(k)).values()
    assert await redis.exists(keys.api_key(apikeys.digest(key)))

    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo"}, headers=auth(key)) as resp:
        assert resp.status == 201

    listed = await admin(redis_url, "--json", "keys", "list", "--customer", "acme")
    assert [row["key_id"] for row in orjson.loads(listed.stdout)] == [key_id]

    revoked = await admin(redis_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo", "body": "x"}, headers=auth(key)) as resp:
        assert resp.status == 401


async def test_bad_customer_ids_and_unknown_keys_are_clear_errors(redis, redis_url):
    bad = await admin(redis_url, "keys", "create", "--customer", "no spaces please")
    assert bad.returncode == 2 and "customer id" in bad.stderr
    missing = await admin(redis_url, "keys", "revoke", "ezt_live_unknown")
    assert missing.returncode == 1 and "no such key" in missing.stderr

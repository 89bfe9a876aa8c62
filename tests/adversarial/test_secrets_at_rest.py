"""Issue 14, secrets at rest: production seals webhook secrets, and a downgrade is refused.

- The production profile refuses to start without ``EZT_SECRETS_KEYS``
  (before, it stored secrets in clear), unless ``EZT_INSECURE_PLAINTEXT_SECRETS=1``
  opts out, with a WARNING at start.
- With keys set, a secret stored unsealed (planted by whoever can write to
  Redis, or left from before the keys) is refused when read, and counted;
  ``ezthrottle-admin secrets reseal`` seals it, and it reads again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest
from prometheus_client import REGISTRY

from ezthrottle_server.common import keys
from ezthrottle_server.common.secretbox import is_sealed, new_key, parse_keys
from support.jobs import auth
from support.redis_server import free_port
from support.services import REGIONS_FILE

pytestmark = pytest.mark.asyncio

KEYS = f"k1:{new_key()}"
PLANTED = "planted_by_someone_0123456789"


def edge_env(redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZT_") or k == "EZT_PARTITIONS"}
    env |= {"REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_REGION": "iad", "EZT_PORT": str(port)}
    return env | {"EZT_PROFILE": "production", "EZT_HOST": "127.0.0.1", "EZT_EDGE_WORKERS": "1"} | extra


async def healthy(port: int, proc: subprocess.Popen[str], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    return False


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ezthrottle_server.edge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=30)
    return err


async def test_production_refuses_to_start_without_keys_unless_loudly_opted_out(redis, redis_url):
    port = free_port()
    refused = start(edge_env(redis_url, port))
    try:
        assert await asyncio.to_thread(refused.wait, 30) != 0
    finally:
        err = stop(refused)
    assert "EZT_SECRETS_KEYS" in err and "EZT_INSECURE_PLAINTEXT_SECRETS=1" in err, err

    for extra in ({"EZT_INSECURE_PLAINTEXT_SECRETS": "1"}, {"EZT_SECRETS_KEYS": KEYS}):
        proc = start(edge_env(redis_url, port, **extra))
        try:
            assert await healthy(port, proc), extra
        finally:
            err = stop(proc)
        opted_out = "webhook secrets are stored in clear" in err
        assert opted_out == ("EZT_INSECURE_PLAINTEXT_SECRETS" in extra), err


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("ezt_secrets_refused_total", {"reason": reason}) or 0.0


async def test_with_keys_an_unsealed_secret_is_refused_until_resealed(http, redis, redis_url, start_edge, api_key):
    await redis.hset(keys.webhook_secrets("acme"), mapping={"primary": PLANTED})  # unsealed, under keys
    edge = await start_edge("iad", secrets_keys=parse_keys(KEYS))
    before = refused("unsealed")
    async with http.get(f"{edge.url}/api/v1/webhook-secrets", headers=auth(api_key)) as resp:
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "secrets_unavailable", body
        assert "reseal" in body["error"]["message"] and PLANTED not in str(body)
    assert refused("unsealed") == before + 1

    env = {**os.environ, "REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_SECRETS_KEYS": KEYS}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ezthrottle_server.admin.cli", "--json", "secrets", "reseal"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and '"resealed":1' in done.stdout, (done.stdout, done.stderr)
    assert is_sealed(await redis.hget(keys.webhook_secrets("acme"), "primary"))
    async with http.get(f"{edge.url}/api/v1/webhook-secrets", headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["primary_secret"] == "pl****89"

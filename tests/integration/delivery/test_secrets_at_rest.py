"""Webhook secrets sealed at rest with EZT_SECRETS_KEYS: Redis never holds them
whole, receivers still verify, a worker without the key sends nothing unsigned,
and `ezthrottle-admin secrets reseal` seals what was stored before."""

import asyncio
import os
import secrets
import subprocess
import sys

import pytest
from standardwebhooks.webhooks import Webhook

from ezthrottle_server.common import keys
from ezthrottle_server.common.secretbox import is_sealed, new_key, parse_keys
from integration.delivery.helpers import all_in, wait_webhooks
from support.jobs import auth, submit
from support.services import REGIONS_FILE

pytestmark = pytest.mark.asyncio

SECRET = "whsec_" + "c2VjcmV0LWtleS1vZi1hdC1sZWFzdC0xNg=="  # a Standard Webhooks secret
SPEC = f"k1:{new_key()}"
KEYS = parse_keys(SPEC)


async def set_secret(http, edge, key, primary):
    async with http.post(f"{edge.url}/api/v1/webhook-secrets", json={"primary_secret": primary}, headers=auth(key)) as resp:
        assert resp.status == 200, await resp.text()


async def stored_secret(redis, edge, api_key):
    """The one customer's stored secrets hash (each test's Redis is flushed)."""
    found = [k async for k in redis.scan_iter(match=keys.WEBHOOK_SECRETS_PATTERN)]
    assert len(found) == 1, found
    return found[0], await redis.hget(found[0], "primary")


async def submit_with_hook(http, edge, key, target, receiver):
    return await submit(
        http, edge.url, key, {"url": f"{target.url}/status/200?n={secrets.token_hex(4)}", "webhooks": [{"url": f"{receiver.url}/hook"}]}
    )


async def test_sealed_in_redis_masked_on_read_and_verified_by_the_receiver(
    http, redis, start_edge, start_delivery, api_key, target, receivers
):
    edge = await start_edge("iad", secrets_keys=KEYS)
    await start_delivery(secrets_keys=KEYS)
    receiver = await receivers()
    await set_secret(http, edge, api_key, SECRET)

    _key, stored = await stored_secret(redis, edge, api_key)
    assert is_sealed(stored) and SECRET not in stored and SECRET[6:20] not in stored
    async with http.get(f"{edge.url}/api/v1/webhook-secrets", headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["primary_secret"] == SECRET[:2] + "****" + SECRET[-2:]

    job = await submit_with_hook(http, edge, api_key, target, receiver)
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    [req] = receiver.requests
    headers = {k: req.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert Webhook(SECRET).verify(req.body, headers)["job_id"] == job["job_id"]

    # Rotation re-seals the old primary as the secondary (sealed values are bound to their field).
    newer = "whsec_" + "bmV3ZXItc2VjcmV0LWtleS0xNi1jaGFycw=="
    async with http.post(f"{edge.url}/api/v1/webhook-secrets/rotate", json={"new_secret": newer}, headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["secondary_secret"] == SECRET[:2] + "****" + SECRET[-2:]
    stored = await redis.hgetall(_key)
    assert all(is_sealed(v) for v in stored.values()) and SECRET not in str(stored) and newer not in str(stored)
    job = await submit_with_hook(http, edge, api_key, target, receiver)
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    req = receiver.requests[-1]
    signatures = req.headers["webhook-signature"].split()
    assert len(signatures) == 2  # signed with both during a rotation
    headers = {k: req.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert Webhook(newer).verify(req.body, headers) and Webhook(SECRET).verify(req.body, headers)


async def test_a_node_without_the_key_answers_503_and_sends_nothing_unsigned(
    http, redis, start_edge, start_delivery, api_key, target, receivers
):
    sealing = await start_edge("iad", secrets_keys=KEYS)
    await set_secret(http, sealing, api_key, SECRET)
    keyless = await start_edge("lax")  # EZT_SECRETS_KEYS forgotten on this one
    async with http.get(f"{keyless.url}/api/v1/webhook-secrets", headers=auth(api_key)) as resp:
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "secrets_unavailable"
        assert "k1" in body["error"]["message"] and SECRET not in str(body)

    await start_delivery()  # without the key too
    receiver = await receivers()
    job = await submit_with_hook(http, sealing, api_key, target, receiver)
    view = await wait_webhooks(
        http,
        sealing.url,
        api_key,
        job["job_id"],
        lambda hooks: hooks["endpoints"][0]["attempts"] >= 1 and hooks["endpoints"][0]["last_error"] is not None,
    )
    [hook] = view["webhooks"]["endpoints"]
    assert "secrets unreadable" in hook["last_error"] and hook["state"] == "retrying"
    await asyncio.sleep(0.3)
    assert receiver.requests == []  # never sent unsigned


def admin(redis_url, *args, keys_spec=None):
    env = {**os.environ, "REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE)}
    env.pop("EZT_SECRETS_KEYS", None)
    if keys_spec:
        env["EZT_SECRETS_KEYS"] = keys_spec
    return subprocess.run(
        [sys.executable, "-m", "ezthrottle_server.admin.cli", "--json", "secrets", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_reseal_seals_secrets_stored_before_and_rotates_keys(
    http, redis, redis_url, start_edge, start_delivery, api_key, target, receivers
):
    plain_edge = await start_edge("iad")  # before EZT_SECRETS_KEYS was set
    await set_secret(http, plain_edge, api_key, SECRET)
    hash_key, stored = await stored_secret(redis, plain_edge, api_key)
    assert stored == SECRET
    assert admin(redis_url, "status").stdout.strip() == '{"unsealed":1}'

    refused = admin(redis_url, "reseal")
    assert refused.returncode == 2 and "EZT_SECRETS_KEYS is not set" in refused.stderr
    done = admin(redis_url, "reseal", keys_spec=SPEC)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"resealed":1,"current":0,"unreadable":0,"changed_meanwhile":0}'
    assert is_sealed(await redis.hget(hash_key, "primary"))
    again = admin(redis_url, "reseal", keys_spec=SPEC)
    assert again.stdout.strip() == '{"resealed":0,"current":1,"unreadable":0,"changed_meanwhile":0}'

    rotated_spec = f"k2:{new_key()},{SPEC}"
    assert admin(redis_url, "reseal", keys_spec=rotated_spec).stdout.strip().startswith('{"resealed":1,')
    assert admin(redis_url, "status").stdout.strip() == '{"sealed:k2":1}'
    unreadable = admin(redis_url, "reseal", keys_spec=SPEC)  # the k2 key dropped too early
    assert unreadable.returncode == 1 and '"unreadable":1' in unreadable.stdout

    edge = await start_edge("ord", secrets_keys=parse_keys(rotated_spec))
    await start_delivery(secrets_keys=parse_keys(rotated_spec))
    receiver = await receivers()
    job = await submit_with_hook(http, edge, api_key, target, receiver)
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    [req] = receiver.requests
    assert Webhook(SECRET).verify(req.body, {k: req.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})

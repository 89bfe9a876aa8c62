"""``/api/v1/webhook-secrets`` on the edge: validation, masking, isolation, no leaks."""

import logging

import pytest

from ezthrottle_server.common import keys
from support.jobs import auth

pytestmark = pytest.mark.asyncio

PRIMARY = "your_secret_min_16_chars"
SECONDARY = "optional_backup_min_16_chars"


async def call(http, method, edge, key=None, headers=None, **kwargs):
    headers = {**(auth(key) if key else {}), **(headers or {})}
    async with http.request(method, f"{edge.url}/api/v1/webhook-secrets", headers=headers, **kwargs) as resp:
        return resp.status, await resp.text(), (await resp.json() if resp.content_type == "application/json" else None)


async def test_set_read_masked_and_delete(http, edge, api_key, redis, caplog):
    caplog.set_level(logging.DEBUG)
    status, _, body = await call(http, "GET", edge, api_key)
    assert status == 404 and body["error"]["code"] == "not_found"

    status, text, body = await call(http, "POST", edge, api_key, json={"primary_secret": PRIMARY, "secondary_secret": SECONDARY})
    assert status == 200 and body["status"] == "ok"
    assert PRIMARY not in text and SECONDARY not in text

    status, text, body = await call(http, "GET", edge, api_key)
    assert status == 200
    assert body == {"customer_id": "acme", "primary_secret": "yo****rs", "secondary_secret": "op****rs", "has_secondary": True}
    assert await redis.hgetall(keys.webhook_secrets("acme")) == {"primary": PRIMARY, "secondary": SECONDARY}

    # A POST without a secondary drops the old one.
    status, _, _ = await call(http, "POST", edge, api_key, json={"primary_secret": PRIMARY, "secondary_secret": None})
    assert status == 200
    _, _, body = await call(http, "GET", edge, api_key)
    assert body["secondary_secret"] is None and body["has_secondary"] is False

    status, _, body = await call(http, "DELETE", edge, api_key)
    assert status == 200 and body == {"status": "ok", "message": "Webhook secrets deleted"}
    assert (await call(http, "GET", edge, api_key))[0] == 404
    assert (await call(http, "DELETE", edge, api_key))[0] == 200  # repeatable

    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert PRIMARY not in logged and SECONDARY not in logged


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"primary_secret": "short_secret"}, "invalid_field", "primary_secret"),
        ({"primary_secret": PRIMARY, "secondary_secret": "short"}, "invalid_field", "secondary_secret"),
        ({"primary_secret": PRIMARY, "secondary_secret": ""}, "invalid_field", "secondary_secret"),
        ({}, "missing_field", "primary_secret"),
        ({"primary_secret": 1234567890123456789}, "invalid_field", "primary_secret"),
        ({"primary_secret": PRIMARY, "tertiary_secret": PRIMARY}, "unknown_field", "tertiary_secret"),
        ({"primary_secret": PRIMARY[:8] + "\n" + PRIMARY[8:]}, "invalid_field", "primary_secret"),
        ({"primary_secret": "x" * 1025}, "invalid_field", "primary_secret"),
    ],
)
async def test_bad_secrets_are_a_400_naming_the_field(http, edge, api_key, body, code, field):
    status, text, answer = await call(http, "POST", edge, api_key, json=body)
    assert status == 400 and answer["error"]["code"] == code and answer["error"]["field"] == field
    if isinstance(body.get("primary_secret"), str) and len(body["primary_secret"]) >= 16:
        assert body["primary_secret"] not in text
    assert (await call(http, "GET", edge, api_key))[0] == 404  # nothing was stored


async def test_bodies_that_are_not_a_json_object(http, edge, api_key):
    status, _, answer = await call(http, "POST", edge, api_key, data=b"not json", headers={"Content-Type": "application/json"})
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, _, answer = await call(http, "POST", edge, api_key, json=[PRIMARY])
    assert status == 400 and answer["error"]["code"] == "invalid_request"


async def test_needs_an_api_key_and_is_per_customer(http, edge, api_key, other_api_key):
    for method in ("GET", "POST", "DELETE"):
        status, _, answer = await call(http, method, edge, json={"primary_secret": PRIMARY} if method == "POST" else None)
        assert status == 401 and answer["error"]["code"] == "unauthorized"
    await call(http, "POST", edge, api_key, json={"primary_secret": PRIMARY})
    assert (await call(http, "GET", edge, other_api_key))[0] == 404
    await call(http, "DELETE", edge, other_api_key)
    _, _, body = await call(http, "GET", edge, api_key)
    assert body["customer_id"] == "acme" and body["primary_secret"] == "yo****rs"


async def rotate(http, edge, key, body):
    async with http.post(f"{edge.url}/api/v1/webhook-secrets/rotate", json=body, headers=auth(key)) as resp:
        return resp.status, await resp.text(), await resp.json()


async def test_rotation_keeps_the_old_primary_as_secondary_in_one_step(http, edge, api_key, other_api_key, redis):
    status, text, body = await rotate(http, edge, api_key, {"new_secret": PRIMARY})  # nothing set yet: the only one
    assert status == 200 and body["primary_secret"] == "yo****rs" and body["has_secondary"] is False
    status, text, body = await rotate(http, edge, api_key, {"new_secret": SECONDARY})
    assert status == 200 and (body["primary_secret"], body["secondary_secret"]) == ("op****rs", "yo****rs")
    assert PRIMARY not in text and SECONDARY not in text
    assert await redis.hgetall(keys.webhook_secrets("acme")) == {"primary": SECONDARY, "secondary": PRIMARY}
    assert (await call(http, "GET", edge, other_api_key))[0] == 404  # per customer

    for bad, code in (
        ({"new_secret": "short"}, "invalid_field"),
        ({}, "missing_field"),
        ({"new_secret": SECONDARY}, "invalid_field"),
        ({"new_secret": PRIMARY, "old": 1}, "unknown_field"),
    ):
        status, _, answer = await rotate(http, edge, api_key, bad)
        assert status == 400 and answer["error"]["code"] == code, (bad, answer)
    assert await redis.hgetall(keys.webhook_secrets("acme")) == {"primary": SECONDARY, "secondary": PRIMARY}  # unchanged
    async with http.post(f"{edge.url}/api/v1/webhook-secrets/rotate", json={"new_secret": PRIMARY}) as resp:
        assert resp.status == 401

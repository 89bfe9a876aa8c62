"""A process keeps a customer's signing secrets for a second after reading them (common/webhooks.py).

What another process writes reaches this one's signatures within that second;
what this process's own secrets API writes, at once; and "no secrets" is never
kept, so the first webhook after a customer sets some is signed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ezthrottle_server.common import keys, webhooks
from ezthrottle_server.common.batching import Batcher
from ezthrottle_server.common.redisconn import Scripts
from ezthrottle_server.common.webhooks import SECRETS_FRESH_S, WebhookPoster
from support.jobs import auth
from support.services import make_settings

pytestmark = pytest.mark.asyncio

OLD, NEW = "old_secret_min_16_chars", "new_secret_min_16_chars"


def poster(redis: Any, redis_url: str) -> WebhookPoster:
    settings = make_settings("delivery", redis_url)
    return WebhookPoster(settings, redis, Scripts(redis), Batcher(redis), sender=None, node="n", log_region="iad", by="edge")  # type: ignore[arg-type]


async def test_secrets_another_process_writes_sign_within_a_second_and_none_is_never_kept(redis, redis_url):
    p = poster(redis, redis_url)
    assert await p.secrets("acme") is None
    await redis.hset(keys.webhook_secrets("acme"), mapping={"primary": OLD})  # as another node's API would
    assert p.read_secrets("acme") is not None  # none was not kept: read
    assert (await p.secrets("acme")).primary == OLD  # type: ignore[union-attr]

    read_at = time.monotonic()
    await redis.hset(keys.webhook_secrets("acme"), mapping={"primary": NEW, "secondary": OLD})  # a rotation elsewhere
    assert p.read_secrets("acme") is None  # kept: no read
    assert (await p.secrets("acme")).primary == OLD  # type: ignore[union-attr]
    await asyncio.sleep(max(0.0, read_at + SECRETS_FRESH_S - time.monotonic()) + 0.05)
    assert p.read_secrets("acme") is not None
    fresh = await p.secrets("acme")
    assert fresh is not None and (fresh.primary, fresh.secondary) == (NEW, OLD)
    assert await p.secrets("other") is None  # kept per customer


async def test_this_processs_own_writes_are_signed_at_once(http, edge, api_key, redis, redis_url):
    p = poster(redis, redis_url)
    url = f"{edge.url}/api/v1/webhook-secrets"
    async with http.post(url, json={"primary_secret": OLD}, headers=auth(api_key)) as resp:
        assert resp.status == 200
    assert (await p.secrets("acme")).primary == OLD  # type: ignore[union-attr]
    async with http.post(f"{url}/rotate", json={"new_secret": NEW}, headers=auth(api_key)) as resp:
        assert resp.status == 200
    rotated = await p.secrets("acme")
    assert rotated is not None and (rotated.primary, rotated.secondary) == (NEW, OLD)
    async with http.post(url, json={"primary_secret": OLD}, headers=auth(api_key)) as resp:
        assert resp.status == 200
    assert (await p.secrets("acme")).primary == OLD  # type: ignore[union-attr]
    async with http.delete(url, headers=auth(api_key)) as resp:
        assert resp.status == 200
    assert await p.secrets("acme") is None


async def test_a_process_keeps_a_bounded_number_of_customers(redis, redis_url, monkeypatch):
    monkeypatch.setattr(webhooks, "SECRETS_KEPT", 3)
    p = poster(redis, redis_url)
    for c in ("c1", "c2", "c3", "c4"):
        await redis.hset(keys.webhook_secrets(c), mapping={"primary": f"{c}_secret_min_16_chars"})
        await p.secrets(c)
    assert list(webhooks._secrets) == ["c2", "c3", "c4"]  # the longest kept went first

"""Bearer API keys → customer, with a short in-process cache.

Revocation takes effect within ``api_key_cache_s`` seconds on every node.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from aiohttp import web

from ..common import apikeys
from ..common.errors import ApiError

_MAX_CACHED = 10_000


class Authenticator:
    def __init__(self, redis: aioredis.Redis, cache_s: float) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self._cache: dict[str, tuple[str, float]] = {}

    async def customer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header:
            raise ApiError("unauthorized", "missing Authorization header; send 'Authorization: Bearer <api key>'")
        if scheme.lower() != "bearer" or not token:
            raise ApiError("unauthorized", "Authorization header must be 'Bearer <api key>'")
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = await apikeys.lookup(self.redis, token)
        if record is None:
            self._cache.pop(token, None)
            raise ApiError("unauthorized", "invalid or revoked API key")
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (record.customer, now + self.cache_s)
        return record.customer

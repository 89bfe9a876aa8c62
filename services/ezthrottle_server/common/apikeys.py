"""API keys: created, looked up and revoked. Stored hashed, never in clear.

A key looks like ``ezt_live_<43 url-safe chars>``; Redis keeps only its
SHA-256 (``ezt:apikey:<sha256>``) with the customer it belongs to.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import keys
from .errors import EZThrottleServerError

if TYPE_CHECKING:
    from .redisconn import RedisClient

KEY_PREFIX = "ezt_live_"
_CUSTOMER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class InvalidCustomerId(EZThrottleServerError, ValueError):
    """A customer id that is not 1 to 64 of ``A-Z a-z 0-9 _ . -``."""


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str  # the SHA-256; safe to show and to revoke by
    customer: str
    created_ms: int
    revoked: bool


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_customer_id(customer: str) -> str:
    if not _CUSTOMER.match(customer):
        raise InvalidCustomerId(f"customer id must be 1-64 characters of letters, digits, '_', '.', '-': {customer!r}")
    return customer


async def create_key(r: RedisClient, customer: str) -> tuple[str, ApiKeyRecord]:
    """Create a key for ``customer``; the clear key is returned once and never stored."""
    check_customer_id(customer)
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = digest(api_key)
    now = int(time.time() * 1000)
    # Two slots (the key's and the customer's), so two steps, in this order: a
    # key is listed before it works, and a crash in between leaves a listed id
    # without a record, which list_keys skips.
    await r.sadd(keys.customer_keys(customer), key_id)  # type: ignore[misc]  # redis-py#2399
    await r.hset(keys.api_key(key_id), mapping={"customer": customer, "created_ms": now, "revoked": 0})  # type: ignore[misc]  # redis-py#2399
    return api_key, ApiKeyRecord(key_id, customer, now, False)


async def lookup(r: RedisClient, api_key: str) -> ApiKeyRecord | None:
    """The live record of a presented key, or None if unknown or revoked."""
    key_id = digest(api_key)
    data = await r.hgetall(keys.api_key(key_id))  # type: ignore[misc]  # redis-py#2399
    if not data or data.get("revoked") == "1":
        return None
    return ApiKeyRecord(key_id, data["customer"], int(data.get("created_ms", 0)), False)


async def revoke(r: RedisClient, key_or_id: str) -> bool:
    """Revoke by clear key or by key id (its SHA-256). True if a key was revoked."""
    key_id = digest(key_or_id) if key_or_id.startswith(KEY_PREFIX) else key_or_id
    k = keys.api_key(key_id)
    if not await r.exists(k):
        return False
    await r.hset(k, "revoked", 1)  # type: ignore[arg-type, misc]  # redis-py#2399
    return True


async def list_keys(r: RedisClient, customer: str) -> list[ApiKeyRecord]:
    out = []
    for key_id in sorted(await r.smembers(keys.customer_keys(customer))):  # type: ignore[misc]  # redis-py#2399
        data = await r.hgetall(keys.api_key(key_id))  # type: ignore[misc]  # redis-py#2399
        if data:
            out.append(ApiKeyRecord(key_id, data["customer"], int(data.get("created_ms", 0)), data.get("revoked") == "1"))
    return out

"""Bearer API keys → customer, with a short in-process cache, and a limit on
failed authentications per client address.

Revocation takes effect within ``api_key_cache_s`` seconds on every node.

Failed authentications (a malformed ``Authorization`` header, or a key that
is unknown or revoked) are counted per client address in Redis
(``keys.auth_failures``), in fixed windows of ``auth_fail_window_s``, so every
node sees the same count. Once an address has ``auth_fail_limit`` failures in
the window, its failures are answered 429 ``rate_limited`` with
``Retry-After`` (the rest of the window) instead of 401, and no longer
counted. The limiter counts failures only and throttles only them: a request
with a valid key is never refused by it, whatever its address (behind a proxy
that is not in ``trusted_proxies``, every client shares the proxy's address,
and a stranger's bad guesses must not lock customers out). A success does not
reset the count (one valid key must not buy unlimited guesses). Guessing a key
stays hopeless: keys are random, far beyond what any rate of guesses can find.
A missing header is not a failed authentication.

The client address is the TCP peer, unless the peer is one of
``trusted_proxies``: then it is the right-most ``X-Forwarded-For`` entry that
is not a trusted proxy. IPv6 clients are counted per /64, since one host
usually holds a whole /64.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from ..common import apikeys, keys, scripting
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.metrics import AUTH_FAILURES, AUTH_RATE_LIMITED

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

_MAX_CACHED = 10_000
_MAX_LIMITED = 10_000
IPV6_CLIENT_PREFIX = 64

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        addr = addr.ipv4_mapped or ipaddress.IPv6Address(int(addr))  # drop any %scope
    return addr


def client_address(request: web.Request, trusted_proxies: Iterable[_Network] = ()) -> str:
    """The address failed authentications are counted against (an IPv4 address or an IPv6 /64)."""
    trusted = tuple(trusted_proxies)
    addr = _parse_ip(request.remote)
    if addr is not None and trusted and any(addr in n for n in trusted):
        hops = [h for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
        for hop in reversed(hops):
            hop_addr = _parse_ip(hop)
            if hop_addr is None:
                break  # garbage: stop at the last address we could trust
            addr = hop_addr
            if not any(hop_addr in n for n in trusted):
                break
    if addr is None:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, IPV6_CLIENT_PREFIX), strict=False))
    return str(addr)


async def count_failure(run: scripting.ScriptRun, client: str, *, window_s: int) -> int:
    """``count_failure.lua``: count one failed authentication of a client address; the failures in its window so far.

    One script, not MULTI: the window starts with the first failure (the counter's TTL).
    """
    return int(await run(keys=[keys.auth_failures(client)], args=[window_s]))


class Authenticator:
    def __init__(
        self,
        redis: RedisClient,
        cache_s: float,
        *,
        fail_limit: int = 20,
        fail_window_s: int = 60,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.redis = redis
        self._count_failure_script = scripting.register(redis, "count_failure")
        self.cache_s = cache_s
        self.fail_limit = fail_limit  # 0: no limit
        self.fail_window_s = fail_window_s
        self.trusted_proxies = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self._cache: dict[str, tuple[str, float]] = {}
        self._limited_until: dict[str, float] = {}  # client -> monotonic end of its 429s (saves Redis)

    @classmethod
    def from_settings(cls, redis: RedisClient, settings: Settings) -> Authenticator:
        return cls(
            redis,
            settings.api_key_cache_s,
            fail_limit=settings.auth_fail_limit,
            fail_window_s=settings.auth_fail_window_s,
            trusted_proxies=settings.trusted_proxies,
        )

    async def customer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError("unauthorized", "missing Authorization header; send 'Authorization: Bearer <api key>'")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        well_formed = scheme.lower() == "bearer" and bool(token)
        now = time.monotonic()
        if well_formed:
            hit = self._cache.get(token)
            if hit is not None and hit[1] > now:
                return hit[0]  # verified moments ago on this node
        if not well_formed:
            await self._failed(request, now)
            raise ApiError("unauthorized", "Authorization header must be 'Bearer <api key>'")
        return await self._verify(request, token, now)

    async def customer_of_key(self, request: web.Request, api_key: str) -> str:
        """The customer of a key given outside the ``Authorization`` header (the console's sign-in and
        cookie), counted against the same failed-login limit; 401 or 429 as :meth:`customer`."""
        now = time.monotonic()
        hit = self._cache.get(api_key)
        if hit is not None and hit[1] > now:
            return hit[0]
        return await self._verify(request, api_key, now)

    async def check_secret(self, request: web.Request, given: str, expected: str) -> bool:
        """Is ``given`` the (non-empty) ``expected`` secret? Compared in constant time; a wrong one counts
        against the failed-login limit (429 instead of ``False`` from an address over it)."""
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return True
        await self._failed(request, time.monotonic())
        return False

    async def _verify(self, request: web.Request, token: str, now: float) -> str:
        """The customer of ``token``, looked up whatever the address's failures; a failure is counted (401 or 429)."""
        record = await apikeys.lookup(self.redis, token) if token else None
        if record is None:
            self._cache.pop(token, None)
            await self._failed(request, now)
            raise ApiError("unauthorized", "invalid or revoked API key")
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (record.customer, now + self.cache_s)
        return record.customer

    async def _failed(self, request: web.Request, now: float) -> None:
        """A failed authentication from the request's address: 429 once it is over the limit, else counted."""
        client = client_address(request, self.trusted_proxies)
        await self._refuse_if_limited(client, now)
        await self._count_failure(client)

    async def _refuse_if_limited(self, client: str, now: float) -> None:
        if self.fail_limit <= 0:
            return
        until = self._limited_until.get(client)
        if until is not None:
            if until > now:
                raise self._rate_limited(until - now)
            del self._limited_until[client]
        key = keys.auth_failures(client)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            count, pttl = await pipe.execute()
        if count is None or int(count) < self.fail_limit:
            return
        wait_s = pttl / 1000 if pttl and pttl > 0 else float(self.fail_window_s)
        if len(self._limited_until) >= _MAX_LIMITED:
            self._limited_until.clear()
        self._limited_until[client] = now + wait_s
        raise self._rate_limited(wait_s)

    async def _count_failure(self, client: str) -> None:
        AUTH_FAILURES.inc()
        if self.fail_limit <= 0:
            return
        await count_failure(self._count_failure_script, client, window_s=self.fail_window_s)

    def _rate_limited(self, wait_s: float) -> ApiError:
        AUTH_RATE_LIMITED.inc()
        retry_after = max(1, math.ceil(wait_s))
        return ApiError(
            "rate_limited",
            f"too many failed authentications from this address; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )

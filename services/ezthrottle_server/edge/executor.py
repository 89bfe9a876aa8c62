"""One outbound attempt: send a job's request and read the answer.

A pooled aiohttp session; a total timeout per attempt; redirects followed by
hand so each hop passes the outbound policy again; response bodies read up to
a cap and marked ``truncated`` beyond it. The executor never raises for what
the network does: every attempt ends in an :class:`AttemptResult`.

Redirects: 303, and 301/302 after a POST, go on as a GET without the body
(what browsers and curl do); 307/308 keep the method and body. A hop to
another origin (scheme, host or port differs) goes without the job's
credentials: ``Authorization``, ``Cookie``, ``Proxy-Authorization`` and the
headers in ``settings.redirect_sensitive_headers``. Once dropped they stay
dropped, even if a later hop comes back to the first origin (as curl and
requests do): a customer's token is for the host they named.

Leaving: ``before`` (the pacer's ``space.lua``) lets a send go, but the
request leaves only once it has a connection, which for a new one means a
name to look up, a TCP and a TLS handshake first. ``left(late_ms)`` is told,
once, when the first hop's request is written on its connection, and how long
after ``before`` that was (the pacer records a late send again: limiter.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from ..common.config import Settings
from ..common.errors import OutboundBlocked
from ..common.outbound import OutboundPolicy, connect_error_text, make_connector

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Never sent on to another origin; settings.redirect_sensitive_headers adds to these.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

# The send in this task leaving: called once by _LeavingRequest.send (it passes the ms since the send was allowed on to left).
_LEAVING: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("ezt_leaving", default=None)


class _LeavingRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling the send in this task that it leaves: ``send`` runs once the connection is made."""

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        leaving = _LEAVING.get()
        if leaving is not None:
            _LEAVING.set(None)  # the first hop only
            leaving()
        return await super().send(conn)


# AttemptResult kinds when no HTTP answer arrived.
TIMEOUT = "timeout"
CONNECTION = "connection"
BLOCKED = "outbound_blocked"
REDIRECTS = "too_many_redirects"
INVALID_REDIRECT = "invalid_redirect"


@dataclass
class AttemptResult:
    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    truncated: bool = False
    latency_ms: float = 0.0
    error_kind: str | None = None  # TIMEOUT, CONNECTION, BLOCKED, REDIRECTS; None with an answer
    error: str | None = None  # human-readable detail

    def result(self) -> dict[str, Any]:
        """The job's ``result`` field, as the webhook payload's ``response``."""
        out: dict[str, Any] = {"status_code": self.status_code, "headers": self.headers, "body": self.body}
        if self.truncated:
            out["truncated"] = True
        return out


def _flatten_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower().rstrip("."), url.port


def redirect_headers(headers: dict[str, str], current: URL, target: URL, sensitive: frozenset[str] = frozenset()) -> dict[str, str]:
    """The headers for a redirect from ``current`` to ``target``: all of them on the
    same origin; without the credentials and ``sensitive`` (lower-case names) on another."""
    if _origin(current) == _origin(target):
        return headers
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS and k.lower() not in sensitive}


class Executor:
    def __init__(self, settings: Settings, policy: OutboundPolicy, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.resolver = resolver  # under the policy's resolver; None: aiohttp's default (tests answer names with their own)
        self._session: aiohttp.ClientSession | None = None
        self._sensitive = frozenset(h.lower() for h in settings.redirect_sensitive_headers)
        region = settings.region_config(settings.region) if settings.region else None
        simulate = settings.simulate_latency and settings.profile == "local" and region is not None
        self._latency = (region.latency_mean_ms, region.latency_jitter_ms) if simulate and region else (0.0, 0.0)

    async def start(self) -> None:
        connector = make_connector(self.policy, resolver=self.resolver, kind="target", limit=max(self.settings.executor_concurrency, 16))
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            request_class=_LeavingRequest,
            # each send's asyncio.timeout bounds the whole exchange, redirects included: no second timer of aiohttp's
            # for each request and each read of its answer (its default total, 5 min, never came first); connects as before
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def simulated_latency_s(self) -> float:
        mean, jitter = self._latency
        if mean <= 0:
            return 0.0
        return max(0.0, mean + random.uniform(-jitter, jitter)) / 1000.0

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: str | None,
        timeout_s: float | None = None,
        *,
        before: Callable[[], Awaitable[Any]] | None = None,
        left: Callable[[float], None] | None = None,
    ) -> AttemptResult:
        """One attempt. ``before`` runs at the moment of sending, just before the request leaves
        (after the simulated latency of the local profile): the pacer's last word (``space.lua``).
        ``left(late_ms)``: the request is written on its connection, ``late_ms`` after ``before`` ended
        (see the module's docstring)."""
        assert self._session is not None, "Executor.start() was not awaited"
        started = time.perf_counter()
        result = await self._send(method, url, headers, body, timeout_s or self.settings.attempt_timeout_s, before, left)
        result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return result

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: str | None,
        timeout_s: float,
        before: Callable[[], Awaitable[Any]] | None,
        left: Callable[[float], None] | None = None,
    ) -> AttemptResult:
        assert self._session is not None
        data = body.encode() if body is not None else None
        delay = self.simulated_latency_s()
        if delay:
            await asyncio.sleep(delay)
        if before is not None:
            await before()
        if left is None:
            return await self._hops(method, URL(url), headers, data, timeout_s)
        allowed = time.perf_counter()
        token = _LEAVING.set(lambda: left((time.perf_counter() - allowed) * 1000))
        try:
            return await self._hops(method, URL(url), headers, data, timeout_s)
        finally:
            _LEAVING.reset(token)

    async def _hops(self, method: str, target: URL, headers: dict[str, str], data: bytes | None, timeout_s: float) -> AttemptResult:
        """The request and the redirects it is given, by hand (see the module's docstring)."""
        assert self._session is not None
        try:
            async with asyncio.timeout(timeout_s):
                for _hop in range(MAX_REDIRECTS + 1):
                    self.policy.check_url(target)
                    async with self._session.request(method, target, headers=headers, data=data, allow_redirects=False) as resp:
                        location = resp.headers.get("Location")
                        if resp.status in _REDIRECTS and location:
                            try:
                                target, previous = target.join(URL(location)), target
                            except ValueError as exc:
                                return AttemptResult(error_kind=INVALID_REDIRECT, error=f"unusable redirect Location {location!r}: {exc}")
                            headers = redirect_headers(headers, previous, target, self._sensitive)
                            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                                method, data = ("GET" if method != "HEAD" else "HEAD"), None
                            continue
                        raw, truncated = await self._read_capped(resp)
                        return AttemptResult(
                            status_code=resp.status,
                            headers=_flatten_headers(resp.headers),
                            body=raw.decode(resp.charset or "utf-8", errors="replace"),
                            truncated=truncated,
                        )
                return AttemptResult(error_kind=REDIRECTS, error=f"more than {MAX_REDIRECTS} redirects")
        except OutboundBlocked as exc:
            return AttemptResult(error_kind=BLOCKED, error=str(exc))
        except TimeoutError:
            return AttemptResult(error_kind=TIMEOUT, error=f"no answer within {timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return AttemptResult(error_kind=CONNECTION, error=connect_error_text(exc))
        except LookupError as exc:  # unknown charset in the answer
            return AttemptResult(error_kind=CONNECTION, error=f"undecodable response: {exc}")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        cap = self.settings.response_body_cap_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            if size + len(chunk) > cap:
                chunks.append(chunk[: cap - size])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False

"""One webhook POST: the outbound policy, a timeout, no redirects.

The policy is asked twice, as for jobs: the URL before anything is sent,
and every address at DNS and connect time (``common.outbound.make_connector``),
so a webhook host that resolves to a private address is refused too.

The sender never raises for what the network does: every POST ends in a
:class:`SendResult`. Redirects are not followed (a 3xx is an answer like any
other non-2xx, and is retried): a webhook URL should be the endpoint itself,
and following redirects would need the policy checked per hop for nothing.
The answer's body is not read beyond what closing the connection needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver

from .config import Settings
from .errors import OutboundBlocked
from .outbound import OutboundPolicy, connect_error_text, make_connector

USER_AGENT = "EZThrottle-Webhooks/1"


@dataclass(slots=True)
class SendResult:
    status_code: int | None = None
    error: str | None = None  # why no answer, or None
    blocked: bool = False  # the outbound policy refused the URL; nothing was sent
    latency_ms: float = 0.0


class WebhookSender:
    def __init__(self, settings: Settings, policy: OutboundPolicy, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.resolver = resolver  # under the policy's resolver; None: aiohttp's default
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = make_connector(self.policy, resolver=self.resolver, kind="webhook", limit=max(self.settings.delivery_concurrency, 8))
        timeout = aiohttp.ClientTimeout(total=self.settings.delivery_timeout_s)  # each POST's, made once
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout)

    @property
    def started(self) -> bool:
        return self._session is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        assert self._session is not None, "WebhookSender.start() was not awaited"
        try:
            target = self.policy.check_url(url)
        except OutboundBlocked as exc:
            return SendResult(error=f"outbound policy: {exc}", blocked=True)
        started = time.perf_counter()
        all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        try:
            async with self._session.post(
                target,
                data=body,
                headers=all_headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
            return SendResult(status_code=status, latency_ms=(time.perf_counter() - started) * 1000)
        except OutboundBlocked as exc:  # refused at DNS or connect time: nothing was sent
            return SendResult(error=f"outbound policy: {exc}", blocked=True, latency_ms=(time.perf_counter() - started) * 1000)
        except TimeoutError:
            error = f"no answer within {self.settings.delivery_timeout_s:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = connect_error_text(exc)
        return SendResult(error=error[:300], latency_ms=(time.perf_counter() - started) * 1000)

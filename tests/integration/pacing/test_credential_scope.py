"""``scope: credential``: one limit per value of the job's Authorization header, as an API counting per API key.

The loopback target counts a sliding second per Authorization value and
answers 429 past its limit. Two credentials go to the same domain: each gets
its own limit (together they go faster than one), and two customers sending
the same credential share its limit (the target counts them together), so
the target refuses nothing. The header itself names no Redis key.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

import pytest
from aiohttp import web

from ezthrottle_server.common import keys
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import max_in_window, submit_many
from support.jobs import wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

LIMIT = 2  # per credential, per sliding second


class PerCredentialTarget:
    """429 to a request that finds ``LIMIT`` others with its Authorization value in the last second."""

    def __init__(self) -> None:
        self.recent: dict[str, deque[float]] = defaultdict(deque)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_get("/api", self._handle)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    async def start(self) -> PerCredentialTarget:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        who = request.headers.get("Authorization", "")
        recent = self.recent[who]
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        self.arrivals[who].append(now)
        if len(recent) >= LIMIT:
            self.refused += 1
            return web.Response(status=429, text="too many requests for this key")
        recent.append(now)
        return web.Response(text="ok")


async def test_each_credential_has_its_own_limit_shared_by_every_customer_that_sends_it(http, redis, start_edge, api_key, other_api_key):
    target = await PerCredentialTarget().start()
    try:
        domain = f"127.0.0.1:{target.port}"
        await apply_overrides(redis, parse_overrides(f"domains:\n  {domain}: {{rps: {LIMIT}, max_concurrent: 4, scope: credential}}\n"))
        edges = [await start_edge(region) for region in ("iad", "lax")]
        url = f"http://{domain}/api"

        def jobs(credential: str, n: int) -> list[dict[str, object]]:
            return [{"url": f"{url}?c={credential}&n={i}", "headers": {"Authorization": f"Bearer {credential}"}} for i in range(n)]

        # acme and globex both send sk-shared at once (the target counts them together), then acme its own key
        bases = [e.url for e in edges]
        ids = await submit_many(http, bases, api_key, jobs("sk-shared", 4))
        ids_other = await submit_many(http, bases, other_api_key, jobs("sk-shared", 4))
        ids += await submit_many(http, bases, api_key, jobs("sk-acme-own", 6))
        for job_id in ids:
            assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=30))["status"] == "success"
        for job_id in ids_other:
            assert (await wait_final(http, edges[0].url, other_api_key, job_id, timeout_s=30))["status"] == "success"

        assert target.refused == 0, f"{target.refused} requests got 429"
        assert len(target.arrivals["Bearer sk-shared"]) == 8 and len(target.arrivals["Bearer sk-acme-own"]) == 6
        # two limits, not one: the domain as a whole saw more than one credential's limit in some second
        every = sorted(t for times in target.arrivals.values() for t in times)
        assert max_in_window(every) > LIMIT

        names = [k async for k in redis.scan_iter(match=f"*{domain}*")]
        assert names and not [k for k in names if "sk-" in k]  # the credential is never a key name...
        assert any(":limit:cred:" in k for k in names)  # ...its keyed hash is
        assert await redis.exists(keys.pacing_credential_key())
    finally:
        await target.runner.cleanup()

"""Issue 14, auth behind proxies: a stranger's bad keys never lock customers out.

Behind an ingress whose address is not in ``EZT_TRUSTED_PROXIES``, every
client shares the proxy's address. Before, 20 bad keys a minute from anyone
got every customer a 429. The failed-login limiter counts failures only and
throttles only them: a request with a valid key is never refused by it, from
any address, and an address that never failed is never throttled.
"""

from __future__ import annotations

import itertools

import pytest

from ezthrottle_server.common import keys
from support.jobs import auth

pytestmark = pytest.mark.asyncio

BAD = "ezt_live_not-a-real-key"
LIMIT = 5
_n = itertools.count()


async def submit(http, edge, key: str, url: str, client: str | None = None) -> tuple[int, str | None]:
    headers = auth(key) | ({"X-Forwarded-For": client} if client else {})
    async with http.post(f"{edge.url}/api/v1/jobs", json={"url": f"{url}?n={next(_n)}"}, headers=headers) as resp:
        body = await resp.json()
        return resp.status, (body.get("error") or {}).get("code")


async def test_behind_an_untrusted_proxy_a_strangers_bad_keys_lock_no_customer_out(http, start_edge, api_key, other_api_key, target):
    edge = await start_edge("iad", auth_fail_limit=LIMIT, auth_fail_window_s=60)  # every client is 127.0.0.1, the "proxy"
    for _ in range(LIMIT):
        assert await submit(http, edge, BAD, f"{target.url}/echo") == (401, "unauthorized")
    assert await submit(http, edge, BAD, f"{target.url}/echo") == (429, "rate_limited")  # the failures are throttled
    assert (await submit(http, edge, api_key, f"{target.url}/echo"))[0] == 201  # first use of each key on this node:
    assert (await submit(http, edge, other_api_key, f"{target.url}/echo"))[0] == 201  # looked up, not refused
    assert await submit(http, edge, BAD, f"{target.url}/echo") == (429, "rate_limited")


async def test_with_trusted_proxies_only_the_failing_address_is_throttled_and_only_its_failures(http, redis, start_edge, api_key, target):
    edge = await start_edge("iad", auth_fail_limit=LIMIT, auth_fail_window_s=60, trusted_proxies=("127.0.0.1/32",))
    attacker, customer = "203.0.113.7", "198.51.100.20"
    for _ in range(LIMIT + 3):
        await submit(http, edge, BAD, f"{target.url}/echo", attacker)
    assert await submit(http, edge, BAD, f"{target.url}/echo", attacker) == (429, "rate_limited")
    assert await redis.get(keys.auth_failures(attacker)) == str(LIMIT)  # counted up to the limit, then only refused
    assert (await submit(http, edge, api_key, f"{target.url}/echo", attacker))[0] == 201  # a valid key, same address
    assert await submit(http, edge, BAD, f"{target.url}/echo", customer) == (401, "unauthorized")  # counted from zero
    assert (await submit(http, edge, api_key, f"{target.url}/echo", customer))[0] == 201
    assert await redis.get(keys.auth_failures("127.0.0.1")) is None  # the proxy itself never failed

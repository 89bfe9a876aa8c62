"""Failed authentications are limited per client address, across nodes.

The probe is ``GET /api/v1/jobs/<unknown id>``: 401 for a bad key, 429 once
the address is limited, 404 for a good key (authenticated, no such job).
Other client addresses are simulated with ``X-Forwarded-For`` from a trusted
proxy (the test client on 127.0.0.1); they are only header values.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ezthrottle_server.common import keys
from ezthrottle_server.edge.auth import client_address
from support.jobs import auth

pytestmark = pytest.mark.asyncio

PROBE = "/api/v1/jobs/job_1700000000000_0123456789abcdefp0"
BAD = "ezt_live_not-a-real-key"


async def probe(http, edge, key: str | None, client: str | None = None, header: str | None = None):
    headers = auth(key) if key is not None else {}
    if header is not None:
        headers = {"Authorization": header}
    if client is not None:
        headers["X-Forwarded-For"] = client
    async with http.get(f"{edge.url}{PROBE}", headers=headers) as resp:
        body = await resp.json()
        return resp.status, body["error"]["code"], resp.headers.get("Retry-After")


async def test_after_n_failures_the_addresses_failures_get_429_and_a_good_key_still_works(http, start_edge, api_key, redis):
    edge = await start_edge("iad", auth_fail_limit=3, auth_fail_window_s=60)
    for _ in range(3):
        assert (await probe(http, edge, BAD))[:2] == (401, "unauthorized")
    status, code, retry_after = await probe(http, edge, BAD)
    assert (status, code) == (429, "rate_limited")
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    # the limiter throttles failures only: a good key is never refused by it
    assert (await probe(http, edge, api_key))[0] == 404
    assert await redis.get(keys.auth_failures("127.0.0.1")) == "3"  # failures over the limit are not counted
    assert 0 < await redis.ttl(keys.auth_failures("127.0.0.1")) <= 60


async def test_malformed_credentials_count_and_a_missing_header_does_not(http, start_edge, api_key):
    edge = await start_edge("iad", auth_fail_limit=2, auth_fail_window_s=60)
    for _ in range(5):
        assert (await probe(http, edge, None))[:2] == (401, "unauthorized")
    assert (await probe(http, edge, api_key))[0] == 404
    assert (await probe(http, edge, None, header="Basic dXNlcjpwYXNz"))[0] == 401
    assert (await probe(http, edge, None, header="Bearer "))[0] == 401
    assert (await probe(http, edge, BAD))[0] == 429


async def test_other_addresses_keep_working(http, start_edge, api_key, other_api_key):
    edge = await start_edge("iad", auth_fail_limit=3, auth_fail_window_s=60, trusted_proxies=("127.0.0.1/32",))
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    for _ in range(3):
        assert (await probe(http, edge, BAD, attacker))[0] == 401
    assert (await probe(http, edge, BAD, attacker))[0] == 429
    assert (await probe(http, edge, api_key, attacker))[0] == 404  # a good key works from there too
    assert (await probe(http, edge, api_key, neighbour))[0] == 404
    assert (await probe(http, edge, other_api_key, neighbour))[0] == 404
    assert (await probe(http, edge, BAD, neighbour))[0] == 401  # counted from zero
    assert (await probe(http, edge, api_key))[0] == 404  # the proxy's own address is another client


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(http, start_edge, api_key):
    edge = await start_edge("iad", auth_fail_limit=3, auth_fail_window_s=60)
    for i in range(3):
        assert (await probe(http, edge, BAD, f"198.51.100.{i}"))[0] == 401
    assert (await probe(http, edge, BAD, "198.51.100.99"))[0] == 429  # all counted against 127.0.0.1
    assert (await probe(http, edge, api_key, "198.51.100.99"))[0] == 404


async def test_every_node_sees_the_same_count(http, start_edge, api_key):
    iad = await start_edge("iad", auth_fail_limit=3, auth_fail_window_s=60)
    lax = await start_edge("lax", auth_fail_limit=3, auth_fail_window_s=60)
    assert (await probe(http, iad, BAD))[0] == 401
    assert (await probe(http, lax, BAD))[0] == 401
    assert (await probe(http, iad, BAD))[0] == 401
    assert (await probe(http, lax, BAD))[0] == 429
    assert (await probe(http, iad, BAD))[0] == 429


async def test_a_success_does_not_reset_the_count(http, start_edge, api_key):
    edge = await start_edge("iad", auth_fail_limit=3, auth_fail_window_s=60)
    for _ in range(2):
        assert (await probe(http, edge, BAD))[0] == 401
    assert (await probe(http, edge, api_key))[0] == 404
    assert (await probe(http, edge, BAD))[0] == 401
    assert (await probe(http, edge, BAD))[0] == 429


async def test_the_limit_lifts_when_the_window_ends(http, start_edge, api_key):
    edge = await start_edge("iad", auth_fail_limit=2, auth_fail_window_s=1)
    for _ in range(2):
        assert (await probe(http, edge, BAD))[0] == 401
    status, _, retry_after = await probe(http, edge, BAD)
    assert status == 429 and retry_after == "1"
    async with asyncio.timeout(5):
        while (await probe(http, edge, BAD))[0] == 429:
            await asyncio.sleep(0.05)
    assert (await probe(http, edge, api_key))[0] == 404


async def test_a_zero_limit_turns_the_limit_off(http, start_edge, api_key, redis):
    edge = await start_edge("iad", auth_fail_limit=0)
    for _ in range(30):
        assert (await probe(http, edge, BAD))[0] == 401
    assert (await probe(http, edge, api_key))[0] == 404
    assert await redis.keys(keys.auth_failures("*")) == []


def _request(remote: str, forwarded: str | None = None) -> web.Request:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    req = make_mocked_request("GET", "/", headers=headers)
    return req.clone(remote=remote)


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "client"),
    [
        ("198.51.100.1", None, (), "198.51.100.1"),
        ("198.51.100.1", "203.0.113.9", (), "198.51.100.1"),  # not a trusted proxy: header ignored
        ("10.0.0.2", "203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
        ("10.0.0.2", "192.0.2.66, 203.0.113.9, 10.0.0.3", ("10.0.0.0/8",), "203.0.113.9"),  # right-most untrusted
        ("10.0.0.2", "garbage", ("10.0.0.0/8",), "10.0.0.2"),
        ("2001:db8:1:2:3:4:5:6", None, (), "2001:db8:1:2::/64"),  # IPv6 clients count per /64
        ("2001:db8:1:2:ffff::1", None, (), "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.1", None, (), "198.51.100.1"),
    ],
)
async def test_client_address(remote, forwarded, trusted, client):
    import ipaddress

    nets = [ipaddress.ip_network(n) for n in trusted]
    assert client_address(_request(remote, forwarded), nets) == client

"""The policy at DNS-resolution and connect time: PolicyResolver and make_connector.

Every test runs under the egress guard (no connect or lookup leaves loopback)
and answers names with a StaticResolver. "Blocked" answers that are not
loopback are refused before any socket exists; the guard would refuse them
too, and fails the test if anything tried.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from ezthrottle_server.common.errors import OutboundBlocked
from ezthrottle_server.common.outbound import OutboundPolicy, PolicyConnector, PolicyResolver, make_connector
from unit.outbound.netguard import EgressGuard, StaticResolver, answers, is_loopback

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("egress_guard")]

PRODUCTION = OutboundPolicy()
LOCAL = OutboundPolicy(allow_loopback=True)


class Server:
    def __init__(self) -> None:
        self.hits = 0
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text="ok")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield srv
    finally:
        await runner.cleanup()


async def fetch(policy: OutboundPolicy, url: str, table: dict | None = None, **kw) -> int:
    connector = make_connector(policy, resolver=StaticResolver(table or {}), **kw)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return resp.status


# -- the guard itself ----------------------------------------------------------


async def test_the_guard_knows_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("localhost")
    for other in ("10.0.0.1", "169.254.169.254", "8.8.8.8", "::ffff:10.0.0.1", "fe80::1", "site.example", None):
        assert not is_loopback(other)


async def test_the_guard_sees_connects_made_through_aiohttp(egress_guard: EgressGuard):
    # 127.0.0.2 is loopback: allowed through, and nobody listens there.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get("http://127.0.0.2:9/")
    assert ("127.0.0.2", 9) in egress_guard.connects


# -- PolicyResolver --------------------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["10.0.0.1"], ["169.254.169.254"], ["fd00:ec2::254"], ["::ffff:10.1.2.3"], ["fe80::1"], ["100.64.0.1"], ["0.0.0.0"]],
)
async def test_resolver_refuses_names_that_resolve_to_blocked_addresses(addresses):
    inner = StaticResolver({"rebind.test": addresses})
    with pytest.raises(OutboundBlocked, match=r"rebind.test"):
        await PolicyResolver(PRODUCTION, inner).resolve("rebind.test", 443)
    assert inner.lookups == ["rebind.test"]


async def test_one_blocked_answer_among_public_ones_refuses_the_name():
    inner = StaticResolver({"mixed.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(OutboundBlocked, match=r"'mixed.test' resolves to a private") as info:
        await PolicyResolver(PRODUCTION, inner).resolve("mixed.test", 443)
    assert "10.0.0.7" not in str(info.value) and "10.0.0.7" in info.value.detail  # the address is for operators only


async def test_public_answers_pass_unchanged():
    inner = StaticResolver({"api.example": ["93.184.216.34", "2606:2800:220:1::1"]})
    results = await PolicyResolver(PRODUCTION, inner).resolve("api.example", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:2800:220:1::1"]


async def test_name_rules_refuse_before_any_lookup():
    inner = StaticResolver({"metadata.google.internal": ["8.8.8.8"], "0x7f.0.0.1": ["127.0.0.1"]})
    for host in ("metadata.google.internal", "localhost", "0x7f.0.0.1", "redis"):
        with pytest.raises(OutboundBlocked):
            await PolicyResolver(PRODUCTION, inner).resolve(host, 80)
    assert inner.lookups == []


# -- make_connector: what actually gets connected to -------------------------------


async def test_local_policy_connects_to_loopback(server: Server, egress_guard: EgressGuard):
    assert await fetch(LOCAL, f"http://127.0.0.1:{server.port}/") == 200
    assert await fetch(LOCAL, f"http://app.test:{server.port}/", {"app.test": ["127.0.0.1"]}) == 200
    assert server.hits == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://rebind.test:{port}/",  # resolves to 127.0.0.1
        "http://REBIND.TEST.:{port}/",
        "http://0x7f.0.0.1:{port}/",  # getaddrinfo would map this to 127.0.0.1
        "http://localhost:{port}/",
    ],
)
async def test_production_policy_refuses_loopback_before_connecting(url, server: Server, egress_guard: EgressGuard):
    with pytest.raises(OutboundBlocked):
        await fetch(PRODUCTION, url.format(port=server.port), {"rebind.test": ["127.0.0.1"], "localhost": ["127.0.0.1"]})
    assert server.hits == 0
    assert egress_guard.connects_to_port(server.port) == []


@pytest.mark.parametrize(
    "url", ["http://2130706433:{port}/", "http://127.1:{port}/", "http://0177.0.0.1:{port}/", "http://127.0.0.1.:{port}/"]
)
async def test_all_digit_legacy_spellings_never_connect(url, server: Server, egress_guard: EgressGuard):
    # aiohttp itself refuses these before resolving; whoever refuses, nothing connects.
    with pytest.raises((OutboundBlocked, aiohttp.ClientError)):
        await fetch(LOCAL, url.format(port=server.port))
    assert server.hits == 0 and egress_guard.connects_to_port(server.port) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:192.168.0.1]/",
        "http://100.100.100.200/",
        "http://internal.test/",  # resolves to 10.1.2.3
        "http://imds.test/",  # resolves to 169.254.169.254
        "http://v6.test/",  # resolves to fe80::1
    ],
)
async def test_private_and_metadata_destinations_fail_before_any_socket(url, egress_guard: EgressGuard):
    table = {"internal.test": ["10.1.2.3"], "imds.test": ["169.254.169.254"], "v6.test": ["fe80::1"]}
    with pytest.raises(OutboundBlocked):
        await fetch(LOCAL, url, table)
    assert egress_guard.connects == []


async def test_refusal_is_not_a_connection_error():
    # The executor reroutes connection errors; a refusal must not look like one.
    assert not issubclass(OutboundBlocked, (OSError, aiohttp.ClientError))


async def test_dns_rebinding_is_caught_on_every_resolution(server: Server, egress_guard: EgressGuard):
    policy = OutboundPolicy(allow_cidrs=("127.0.0.1/32",))
    table = {"rebind.test": answers(["127.0.0.1"], ["127.0.0.2"])}
    connector = make_connector(policy, resolver=StaticResolver(table), use_dns_cache=False, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://rebind.test:{server.port}/") as resp:
            assert resp.status == 200
        with pytest.raises(OutboundBlocked, match=r"rebind.test") as info:
            await session.get(f"http://rebind.test:{server.port}/")
        assert "127.0.0.2" in info.value.detail
    assert server.hits == 1
    assert [a[0] for a in egress_guard.connects_to_port(server.port)] == ["127.0.0.1"]


async def test_the_socket_factory_refuses_even_if_resolution_let_an_address_through(egress_guard: EgressGuard):
    # Defence in depth: a resolver that lets everything through, over a strict connector.
    # Several answers take aiohttp's happy-eyeballs path; the refusal still surfaces as OutboundBlocked.
    for addresses in (["127.0.0.1"], ["127.0.0.1", "::1"], ["127.0.0.1", "127.0.0.2", "::1"]):
        connector = PolicyConnector(PRODUCTION, resolver=StaticResolver({"x.test": addresses}))
        connector._policy_resolver.policy = LOCAL
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(OutboundBlocked, match=r"host 'x.test' resolves to a loopback address") as info:
                await session.get("http://x.test:9/")
            assert "127.0.0.1" not in str(info.value) and "127.0.0.1" in info.value.detail
    assert egress_guard.connects == []


async def test_connector_options_pass_through_and_socket_factory_is_ours():
    connector = make_connector(PRODUCTION, limit=7, ttl_dns_cache=5)
    try:
        assert connector.limit == 7 and isinstance(connector, aiohttp.TCPConnector)
    finally:
        await connector.close()
    with pytest.raises(TypeError):
        make_connector(PRODUCTION, socket_factory=lambda ai: socket.socket())

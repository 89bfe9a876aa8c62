"""Connect time: a name that resolves to a blocked address, directly or on a
redirect hop, fails the attempt with reason ``outbound_blocked``; nothing is
sent and the job is not rerouted.

Names are answered by a StaticResolver inside the edge. Blocked answers are
loopback addresses where possible (a production edge refuses them, and a bug
would only reach the loopback target, which records it); the private and
metadata answers are refused before any socket, with the egress guard behind.
"""

from __future__ import annotations

import re

import pytest

from integration.outbound.helpers import post_job, use_resolver
from support.jobs import wait_final

pytestmark = pytest.mark.asyncio

NAMES = {
    "loop.test": ["127.0.0.1"],  # the target's own address: blocked in production
    "private.test": ["10.0.0.1"],
    "imds.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "allowed.test": ["127.0.0.1"],
    "other.test": ["127.0.0.2"],
}


async def run_job(http, edge, api_key, payload):
    status, body = await post_job(http, edge, api_key, payload)
    assert status == 201, body
    return await wait_final(http, edge.url, api_key, body["job_id"])


async def assert_blocked(view, target, egress_guard, detail=""):
    assert view["status"] == "failed" and view["error"] == "outbound_blocked", view
    assert view["reroutes"] == 0 and view["retries"] == 0
    [attempt] = view["attempts"]
    assert detail in (attempt["error"] or ""), attempt
    assert attempt["status_code"] is None
    assert not [r for r in target.requests if r.path == "/echo"]
    assert egress_guard.connects_to_port(target.port) == [] or all(a[0] == "127.0.0.1" for a in egress_guard.connects_to_port(target.port))


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("loop.test", "host 'loop.test' resolves to a loopback address"),
        ("private.test", "resolves to a private (RFC 1918) address"),
        ("imds.test", "metadata"),
        ("mixed.test", "resolves to a loopback address"),
        ("mapped.test", "loopback"),
    ],
)
async def test_a_name_resolving_to_a_blocked_address_fails_without_sending(name, detail, http, start_edge, api_key, target, egress_guard):
    edge = await start_edge("iad", profile="production", outbound_allowed_ports=(target.port,))
    await start_edge(
        "lax", profile="production", outbound_allowed_ports=(target.port,)
    )  # somewhere to reroute to, if it were a connection error
    await use_resolver(edge, NAMES)
    view = await run_job(http, edge, api_key, {"url": f"http://{name}:{target.port}/echo", "retry_policy": {"max_reroutes": 2}})
    await assert_blocked(view, target, egress_guard, detail)
    assert egress_guard.connects_to_port(target.port) == []
    assert not {a for addrs in NAMES.values() for a in addrs} & set(re.findall(r"[0-9a-f:.]{7,}", view["attempts"][0]["error"]))


async def test_an_allow_listed_network_is_reached_by_name(http, start_edge, api_key, target):
    edge = await start_edge("iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port,))
    await use_resolver(edge, NAMES)
    view = await run_job(http, edge, api_key, {"url": f"http://allowed.test:{target.port}/echo"})
    assert view["status"] == "success", view
    assert len(target.matching("/echo")) == 1


REDIRECTS = [
    ("http://127.0.0.2:{port}/echo", "loopback"),
    ("http://0x7f.0.0.1:{port}/echo", "non-canonical"),
    ("http://2130706433:{port}/echo", "non-canonical"),
    ("http://[::ffff:127.0.0.2]:{port}/echo", "loopback"),
    ("http://localhost:{port}/echo", "loopback"),
    ("http://other.test:{port}/echo", "host 'other.test' resolves to a loopback address"),
    ("http://private.test/echo", "resolves to a private (RFC 1918) address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://10.0.0.1/", "private"),
    ("/redirect?to=http://169.254.169.254/", "metadata"),  # a relative hop, then a blocked one
]


@pytest.mark.parametrize(("location", "detail"), REDIRECTS)
async def test_every_redirect_hop_is_checked(location, detail, http, start_edge, api_key, target, egress_guard):
    # The target itself (127.0.0.1) is allow-listed; where it redirects to is not.
    edge = await start_edge("iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port,))
    await use_resolver(edge, NAMES)
    to = location.format(port=target.port)
    status, body = await post_job(http, edge, api_key, {"url": f"{target.url}/redirect?code=307&to={_quote(to)}"})
    assert status == 201, body
    view = await wait_final(http, edge.url, api_key, body["job_id"])
    await assert_blocked(view, target, egress_guard, detail)
    assert {a[0] for a in egress_guard.connects_to_port(target.port)} <= {"127.0.0.1"}


async def test_a_redirect_to_an_allowed_name_is_followed(http, start_edge, api_key, target):
    edge = await start_edge("iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port,))
    await use_resolver(edge, NAMES)
    to = _quote(f"http://allowed.test:{target.port}/echo")
    view = await run_job(http, edge, api_key, {"url": f"{target.url}/redirect?code=302&to={to}"})
    assert view["status"] == "success", view
    assert [r.path for r in target.requests] == ["/redirect", "/echo"]


def _quote(url: str) -> str:
    from urllib.parse import quote

    return quote(url, safe="")

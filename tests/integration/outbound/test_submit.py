"""Submit time: a production edge answers 422 ``outbound_blocked`` for any URL
(target, webhook, nested step) whose host is a blocked literal or name, in any
spelling, and writes nothing. Every refusal here happens before any connect;
the egress guard fails the test if something tried one anyway.
"""

from __future__ import annotations

import pytest

from ezthrottle_server.common import keys
from integration.outbound.helpers import post_job, use_resolver
from support.jobs import job_records, wait_final

pytestmark = pytest.mark.asyncio

BLOCKED_URLS = [
    ("http://127.0.0.1:{port}/echo", "loopback"),
    ("http://2130706433:{port}/echo", "loopback"),
    ("http://0177.0.0.1:{port}/echo", "loopback"),
    ("http://0x7f.0.0.1:{port}/echo", "loopback"),
    ("http://127.1:{port}/echo", "loopback"),
    ("http://127.0.0.1.:{port}/echo", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/echo", "loopback"),
    ("http://[::1]:{port}/echo", "loopback"),
    ("http://LOCALHOST:{port}/echo", "loopback"),
    ("http://localhost.:{port}/echo", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://0xa.0.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://2852039166/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://0.0.0.0:{port}/", "unspecified"),
    ("http://billing.internal/", ".internal"),
    ("http://redis:6379/", "single-label"),
]


async def assert_refused(http, edge, api_key, redis, payload, field, reason):
    status, body = await post_job(http, edge, api_key, payload)
    assert status == 422, body
    assert body["error"]["code"] == "outbound_blocked"
    assert body["error"]["field"] == field
    assert body["error"]["message"].startswith(f"{field}: ")
    assert reason.lower() in body["error"]["message"].lower(), body
    assert await job_records(redis) == []
    assert await redis.keys(keys.idempotency(0, "acme", "*")) == []


@pytest.mark.parametrize(("url", "reason"), BLOCKED_URLS)
async def test_blocked_target_urls_are_422_naming_the_field(url, reason, http, start_edge, api_key, redis, target, egress_guard):
    edge = await start_edge("iad", profile="production")
    await assert_refused(http, edge, api_key, redis, {"url": url.format(port=target.port)}, "url", reason)
    assert target.requests == [] and egress_guard.connects_to_port(target.port) == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"webhooks": [{"url": "https://hooks.example/ok"}, {"url": "http://169.254.169.254/"}]}, "webhooks[1].url"),
        ({"fallback_job": {"url": "http://0x7f.1/", "trigger": {"type": "on_error", "codes": [500]}}}, "fallback_job.url"),
        ({"on_success": {"url": "https://next.example/", "webhooks": [{"url": "http://10.1.1.1/"}]}}, "on_success.webhooks[0].url"),
        (
            {"on_failure": {"url": "https://alert.example/", "fallback_job": {"url": "http://[::ffff:a9fe:a9fe]/", "trigger": {}}}},
            "on_failure.fallback_job.url",
        ),
        ({"on_success": {"url": "http://localhost/", "type": "frugal"}}, "on_success.url"),
    ],
)
async def test_webhooks_and_nested_steps_are_checked_too(payload, field, http, start_edge, api_key, redis):
    edge = await start_edge("iad", profile="production")
    await assert_refused(http, edge, api_key, redis, {"url": "https://api.example/charge", **payload}, field, "")


async def test_the_local_profile_accepts_loopback_targets(http, start_edge, api_key, target):
    edge = await start_edge("iad")
    status, body = await post_job(http, edge, api_key, {"url": f"{target.url}/echo"})
    assert status == 201, body
    assert (await wait_final(http, edge.url, api_key, body["job_id"]))["status"] == "success"
    # ...but not other private addresses, nor odd spellings of loopback
    for url in ("http://10.0.0.1/", "http://169.254.169.254/", f"http://0x7f.0.0.1:{target.port}/echo"):
        status, body = await post_job(http, edge, api_key, {"url": url})
        assert status == 422 and body["error"]["code"] == "outbound_blocked", (url, body)
    assert len(target.requests) == 1


async def test_production_accepts_public_names_and_allow_listed_networks(http, start_edge, api_key, target, redis):
    edge = await start_edge("iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port,))
    await use_resolver(edge, {"api.example": ["127.0.0.2"]})  # no DNS; and nothing listens there
    status, body = await post_job(http, edge, api_key, {"url": "https://api.example/v1/charges"})
    assert status == 201, body
    status, body = await post_job(http, edge, api_key, {"url": f"{target.url}/echo"})
    assert status == 201, body
    assert (await wait_final(http, edge.url, api_key, body["job_id"]))["status"] == "success"
    status, body = await post_job(http, edge, api_key, {"url": f"http://127.0.0.2:{target.port}/echo"})
    assert status == 422 and "loopback" in body["error"]["message"]


async def test_allow_listed_hosts_pass_the_name_rules(http, start_edge, api_key):
    edge = await start_edge("iad", profile="production", outbound_allow_hosts=("billing.internal",))
    await use_resolver(edge, {"billing.internal": ["127.0.0.2"]})
    status, body = await post_job(http, edge, api_key, {"url": "http://billing.internal/invoices"})
    assert status == 201, body
    status, body = await post_job(http, edge, api_key, {"url": "http://other.internal/"})
    assert status == 422, body

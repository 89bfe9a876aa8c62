"""Webhook delivery end to end: real edge, real delivery workers, real receivers."""

import asyncio
import time

import orjson
import pytest

from ezthrottle_server.common import keys
from integration.delivery.helpers import all_in, by_job, closed_port, states, wait_webhooks
from support.jobs import get_job, submit, wait_final

pytestmark = pytest.mark.asyncio


async def test_payload_reaches_every_webhook_and_the_job_records_it(http, edge, delivery, api_key, target, receivers):
    a, b = await receivers(), await receivers()
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo",
            "metadata": {"order": "42"},
            "idempotent_key": "order-42",
            "webhooks": [{"url": f"{a.url}/hook"}, {"url": f"{b.url}/other", "has_quorum_vote": False}],
        },
    )
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    [ra], [rb] = await a.wait_for(1), await b.wait_for(1)
    assert ra.body == rb.body  # one payload, byte for byte
    assert ra.method == "POST" and ra.path == "/hook" and ra.headers["Content-Type"] == "application/json"
    payload = ra.json()
    assert list(payload)[:5] == ["job_id", "idempotent_key", "status", "response", "metadata"]
    assert payload["job_id"] == job["job_id"] and payload["idempotent_key"] == "order-42"
    assert payload["status"] == "success" and payload["metadata"] == {"order": "42"}
    assert payload["response"]["status_code"] == 200
    assert payload["response"]["headers"]["content-type"].startswith("application/json")
    assert isinstance(payload["response"]["body"], str) and '"/echo"' in payload["response"]["body"]
    assert payload["region"] == "iad" and payload["attempts"] == 1 and payload["error"] is None
    assert "X-EZThrottle-Signature" not in ra.headers  # no secret set: unsigned
    assert ra.headers["webhook-id"] and ra.headers["webhook-id"] != rb.headers["webhook-id"]

    hooks = view["webhooks"]
    assert hooks["quorum"] == 1 and hooks["votes"] == 1 and hooks["quorum_met"] is True
    assert hooks["quorum_met_at_ms"] >= view["finished_at_ms"]
    first, second = hooks["endpoints"]
    assert first["url"] == f"{a.url}/hook" and first["has_quorum_vote"] is True
    assert first["attempts"] == 1 and first["last_status_code"] == 200 and first["delivered_at_ms"]
    assert second["has_quorum_vote"] is False and second["state"] == "delivered"


async def test_a_failed_job_is_delivered_as_failed(http, edge, delivery, api_key, target, receivers):
    r = await receivers()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/404", "webhooks": [{"url": r.url}]})
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    [req] = await r.wait_for(1)
    payload = req.json()
    assert payload["status"] == "failed" and payload["error"] == "non_retryable_status"
    assert payload["response"]["status_code"] == 404 and payload["response"]["body"] == "status 404"


async def test_webhooks_wait_for_the_job_then_show_pending(http, edge, api_key, target, receivers):
    """Before the job is final (here: no delivery worker runs) the section lists every webhook as pending."""
    r = await receivers()
    later = int(time.time() * 1000) + 60_000
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "retry_at": later, "webhooks": [{"url": r.url}]})
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "scheduled"
    assert view["webhooks"]["quorum_met"] is False and states(view["webhooks"]) == ["pending"]
    plain = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200?plain=1"})
    assert (await wait_final(http, edge.url, api_key, plain["job_id"]))["webhooks"] is None


async def test_receiver_down_then_up_nothing_is_lost(http, edge, start_delivery, api_key, target, receivers):
    """Two delivery workers, ten jobs, the receiver refusing connections until every webhook has failed."""
    await start_delivery()
    await start_delivery()
    port = closed_port()
    jobs = [
        (
            await submit(
                http, edge.url, api_key, {"url": f"{target.url}/status/200?n={i}", "webhooks": [{"url": f"http://127.0.0.1:{port}/in"}]}
            )
        )["job_id"]
        for i in range(10)
    ]
    for job_id in jobs:
        view = await wait_webhooks(http, edge.url, api_key, job_id, lambda h: h["endpoints"][0]["attempts"] >= 2)
        endpoint = view["webhooks"]["endpoints"][0]
        assert endpoint["state"] == "retrying" and endpoint["last_status_code"] is None
        assert "Connect" in endpoint["last_error"] and endpoint["next_attempt_at_ms"]
        assert view["webhooks"]["quorum_met"] is False

    receiver = await receivers(port=port)
    for job_id in jobs:
        view = await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))
        assert view["webhooks"]["quorum_met"] is True
    assert set(by_job(receiver.requests)) == set(jobs)


async def test_error_statuses_are_retried_until_2xx(http, edge, delivery, api_key, target, receivers):
    r = await receivers(status=503)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": r.url}]})
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], lambda h: h["endpoints"][0]["attempts"] >= 3)
    assert view["webhooks"]["endpoints"][0]["last_status_code"] == 503
    r.status = 200
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    endpoint = view["webhooks"]["endpoints"][0]
    assert endpoint["attempts"] >= 4 and endpoint["last_status_code"] == 200
    assert len({req.headers["webhook-id"] for req in r.requests}) == 1  # the same message, retried
    assert [req.headers["X-EZThrottle-Attempt"] for req in r.requests] == [str(i + 1) for i in range(len(r.requests))]


async def test_quorum_two_of_three_with_one_receiver_dead(http, edge, delivery, api_key, target, receivers):
    a, b = await receivers(), await receivers()
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"{target.url}/status/200", "webhooks": [{"url": a.url}, {"url": dead}, {"url": b.url}], "webhook_quorum": 2},
    )
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], lambda h: h["quorum_met"])
    hooks = view["webhooks"]
    assert hooks["quorum"] == 2 and hooks["votes"] == 2
    assert hooks["quorum_met_at_ms"] >= view["finished_at_ms"]
    assert states(hooks)[0] == "delivered" and states(hooks)[2] == "delivered"
    assert states(hooks)[1] in ("pending", "retrying")


async def test_non_voting_webhooks_do_not_count_toward_the_quorum(http, edge, delivery, api_key, target, receivers):
    observer = await receivers()
    voter = f"http://127.0.0.1:{closed_port()}/hook"
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"{target.url}/status/200", "webhooks": [{"url": voter}, {"url": observer.url, "has_quorum_vote": False}]},
    )
    view = await wait_webhooks(
        http, edge.url, api_key, job["job_id"], lambda h: h["endpoints"][1]["state"] == "delivered" and h["endpoints"][0]["attempts"] >= 2
    )
    assert view["webhooks"]["votes"] == 0 and view["webhooks"]["quorum_met"] is False
    assert view["webhooks"]["quorum_met_at_ms"] is None


async def test_410_gone_stops_retrying_that_endpoint(http, edge, delivery, api_key, target, receivers, redis):
    gone, fine = await receivers(status=410), await receivers()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": gone.url}, {"url": fine.url}]})
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered", "dead"))
    first, second = view["webhooks"]["endpoints"]
    assert first["state"] == "dead" and first["dead_reason"] == "gone" and first["attempts"] == 1
    assert first["last_status_code"] == 410 and first["next_attempt_at_ms"] is None
    assert second["state"] == "delivered"
    # Nothing is left that could send it again: no scheduled retry, no stream entry.
    assert await redis.zcard(keys.delivery_scheduled(0)) == 0
    for route in ("any", "iad", "lax", "ord"):
        assert await redis.xlen(keys.delivery_sends(0, route)) == 0
    assert len(gone.requests) == 1


async def test_outbound_policy_applies_to_webhooks(http, edge, start_delivery, api_key, target, receivers):
    """A production delivery worker refuses loopback webhooks: dead at once, nothing sent."""
    await start_delivery(profile="production")
    r = await receivers()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": r.url}]})
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("dead"))
    endpoint = view["webhooks"]["endpoints"][0]
    assert endpoint["dead_reason"] == "outbound_blocked" and "loopback" in endpoint["last_error"]
    assert r.requests == []


async def test_regional_webhooks_go_out_from_their_region(http, edge, start_delivery, api_key, target, receivers):
    await start_delivery("lax")
    await start_delivery()
    r = await receivers()
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/status/200",
            "webhooks": [
                {"url": f"{r.url}/lax", "regions": ["lax"]},
                {"url": f"{r.url}/ord", "regions": ["ord"]},  # no ord delivery worker: any worker sends it
                {"url": f"{r.url}/any"},
            ],
        },
    )
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    lax, ord_, _any = view["webhooks"]["endpoints"]
    assert lax["delivered_from"] == "lax" and lax["regions"] == ["lax"]
    assert ord_["regions"] == ["ord"] and ord_["state"] == "delivered"
    assert sorted(req.path for req in r.requests) == ["/any", "/lax", "/ord"]


async def test_delivery_metrics(http, edge, delivery, api_key, target, receivers):
    r = await receivers()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": r.url}]})
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    async with http.get(f"{delivery.url}/metrics") as resp:
        text = await resp.text()
    assert 'ezt_webhook_deliveries_total{outcome="delivered"}' in text
    assert "ezt_webhook_quorum_seconds_count" in text
    async with http.get(f"{delivery.url}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"


async def test_a_job_delivered_once_even_if_its_entry_comes_twice(http, edge, delivery, api_key, target, receivers, redis):
    """A second deliveries entry for the same job (a replayed XADD) plans nothing new."""
    r = await receivers()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": r.url}]})
    await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    stream = keys.deliveries(keys.job_partition(job["job_id"]))
    await redis.xadd(stream, {"job": job["job_id"]})
    async with asyncio.timeout(5):
        while await redis.xlen(stream):
            await asyncio.sleep(0.02)
    data = await redis.hgetall(keys.job_webhooks(job["job_id"]))
    assert data["0:attempts"] == "1" and len(r.requests) == 1
    assert orjson.loads(data["payload"])["job_id"] == job["job_id"]


async def resolve_names(delivery_app, table):
    """Make a delivery worker answer host names from ``table`` (no DNS)."""
    from ezthrottle_server.delivery.app import CTX
    from unit.outbound.netguard import StaticResolver

    sender = delivery_app.app[CTX].worker.sender
    await sender.close()
    sender.resolver = StaticResolver(table)
    await sender.start()


@pytest.mark.parametrize(("profile", "state"), [("production", "dead"), ("local", "delivered")])
async def test_webhook_names_are_checked_at_connect_time(profile, state, http, edge, start_delivery, api_key, target, receivers):
    """``hook.test`` passes the URL check, then resolves to loopback: a production worker refuses it."""
    r = await receivers()
    await resolve_names(await start_delivery(profile=profile, outbound_allowed_ports=(r.port,)), {"hook.test": ["127.0.0.1"]})
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": f"http://hook.test:{r.port}/in"}]})
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in(state))
    endpoint = view["webhooks"]["endpoints"][0]
    if state == "dead":
        assert endpoint["dead_reason"] == "outbound_blocked" and "'hook.test' resolves to a loopback address" in endpoint["last_error"]
        assert "127.0.0.1" not in endpoint["last_error"]  # a customer reads it: no address a name resolved to
        assert endpoint["attempts"] == 1 and r.requests == []
    else:
        [req] = r.requests
        assert req.path == "/in" and req.json()["job_id"] == job["job_id"]

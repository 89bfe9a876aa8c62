"""The edge that finished a job sends the first attempt of its webhooks (edge/webhooks.py).

The delivery service runs beside it all along: in the normal case it sends no
second copy; with ``EZT_EDGE_DELIVERS_WEBHOOKS=0`` it sends them as before; a
webhook the edge's host pace holds back, or one whose first POST fails, is its
to send. The webhooks the edge sends are the delivery service's byte for byte
(signature headers, payload) and pass the same outbound policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.common.batching import Batcher
from ezthrottle_server.common.metrics import WEBHOOK_HANDED_OVER, WEBHOOK_PACED, WEBHOOK_POSTS
from ezthrottle_server.common.webhook_signing import ezthrottle_signature, message_id, standard_signature
from integration.delivery.helpers import HoldingReceiver
from integration.outbound.helpers import use_resolver
from support.jobs import auth, submit
from support.services import app_starter
from support.targets import WebhookReceiver

pytestmark = pytest.mark.asyncio

GRACE_S = 0.2
SECRET = "whsec-edge-test-secret-0123456789"
SIGNED_HEADERS = {"content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature", "x-ezthrottle-signature"}


@pytest_asyncio.fixture
async def delivery(redis: Any, redis_url: str) -> Any:
    from ezthrottle_server.delivery.app import create_app

    async with app_starter(
        "delivery", redis_url, lambda s: create_app(s, stop_grace_s=1.0), delivery_poll_s=0.01, delivery_backoff_base_s=0.05,
        delivery_backoff_cap_s=0.2, node_id="delivery-t",
    ) as start:  # fmt: skip
        yield await start()


@pytest_asyncio.fixture
async def hooks_receivers() -> Any:
    started: list[WebhookReceiver] = []

    async def start(status: int = 200) -> WebhookReceiver:
        r = WebhookReceiver(status)
        await r.start()
        started.append(r)
        return r

    try:
        yield start
    finally:
        for r in started:
            await r.stop()


def posts() -> dict[str, float]:
    return {by: WEBHOOK_POSTS.labels(by)._value.get() for by in ("edge", "delivery")}


async def wait_hooks(redis: Any, job_id: str, cond: Any, timeout_s: float = 15.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    hooks: dict[str, str] = {}
    while time.monotonic() < deadline:
        hooks = await redis.hgetall(keys.job_webhooks(job_id))
        if hooks and cond(hooks):
            return hooks
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id}'s webhooks never met the condition; last: {hooks}")


async def nothing_left_for_delivery(redis: Any, job_id: str) -> None:
    p = keys.job_partition(job_id)
    assert await redis.zcard(keys.delivery_handoff(p)) == 0
    assert await redis.xlen(keys.deliveries(p)) == 0
    assert await redis.zcard(keys.delivery_scheduled(p)) == 0


async def set_secret(http: Any, edge: Any, api_key: str) -> None:
    async with http.post(f"{edge.url}/api/v1/webhook-secrets", json={"primary_secret": SECRET}, headers=auth(api_key)) as resp:
        assert resp.status == 200, await resp.text()


def assert_signed(req: Any, job_id: str, hook: int) -> None:
    names = {k.lower() for k in req.headers}
    assert names >= SIGNED_HEADERS and req.headers["X-EZThrottle-Attempt"] == "1"
    t = int(req.headers["webhook-timestamp"])
    assert req.headers["webhook-id"] == message_id(job_id, hook)
    assert req.headers["X-EZThrottle-Signature"] == ezthrottle_signature(req.body, SECRET, t)
    assert req.headers["webhook-signature"] == standard_signature(message_id(job_id, hook), t, req.body, SECRET)


async def test_the_edge_sends_the_first_attempt_and_delivery_sends_no_second_copy(
    http, start_edge, delivery, redis, api_key, target, hooks_receivers
):
    edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S)
    await set_secret(http, edge, api_key)
    r1, r2 = await hooks_receivers(), await hooks_receivers()
    before = posts()
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"{target.url}/status/200", "webhook_quorum": 2, "metadata": {"k": "v"}, "webhooks": [{"url": r1.url}, {"url": r2.url}]},
    )
    job_id = job["job_id"]
    hooks = await wait_hooks(redis, job_id, lambda h: h.get("quorum_met_ms"))
    assert hooks["0:sent_by"] == hooks["1:sent_by"] == edge.settings.node_id and hooks["votes"] == "2"
    await nothing_left_for_delivery(redis, job_id)
    # The delivery service sweeps every 10 ms: three grace periods on, it has sent nothing of its own.
    deadline = int(hooks["job_finished_ms"]) + 3 * GRACE_S * 1000
    while time.time() * 1000 < deadline:
        await asyncio.sleep(0.05)
    assert [len(r1.requests), len(r2.requests)] == [1, 1]
    after = posts()
    assert after["edge"] - before["edge"] == 2 and after["delivery"] - before["delivery"] == 0
    for hook, r in enumerate((r1, r2)):
        assert_signed(r.requests[0], job_id, hook)
        body = r.requests[0].json()
        assert body["job_id"] == job_id and body["status"] == "success" and body["metadata"] == {"k": "v"} and body["attempts"] == 1
    assert r1.requests[0].body == r2.requests[0].body == hooks["payload"].encode()


async def test_switched_off_the_delivery_service_sends_them_the_same_way(
    http, start_edge, delivery, redis, api_key, target, hooks_receivers
):
    edge = await start_edge("iad", edge_delivers_webhooks=False)
    await set_secret(http, edge, api_key)
    r = await hooks_receivers()
    before = posts()
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "metadata": {"k": "v"}, "webhooks": [{"url": r.url}]})
    hooks = await wait_hooks(redis, job["job_id"], lambda h: h.get("quorum_met_ms"))
    assert hooks["0:sent_by"] == "delivery-t"
    after = posts()
    assert after["edge"] - before["edge"] == 0 and after["delivery"] - before["delivery"] == 1
    [req] = r.requests
    assert_signed(req, job["job_id"], 0)
    assert req.body == hooks["payload"].encode()


async def test_a_failed_first_post_is_retried_by_the_delivery_service(http, start_edge, delivery, redis, api_key, target, hooks_receivers):
    edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S)
    flaky = await hooks_receivers(status=503)
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": flaky.url}]})
    job_id = job["job_id"]
    await wait_hooks(redis, job_id, lambda h: h.get("0:state") == "retrying" or int(h.get("0:attempts") or 0) >= 2)
    flaky.status = 200
    hooks = await wait_hooks(redis, job_id, lambda h: h.get("0:state") == "delivered")
    assert hooks["0:sent_by"] == "delivery-t" and int(hooks["0:attempts"]) >= 2 and hooks["votes"] == "1"
    assert flaky.requests[0].headers["X-EZThrottle-Attempt"] == "1"
    assert {q.headers["webhook-id"] for q in flaky.requests} == {message_id(job_id, 0)}


async def test_the_host_pace_holds_back_the_edge_too(http, start_edge, delivery, redis, api_key, target, hooks_receivers):
    """Three webhooks to one host at 1 POST a second (burst 1): the edge sends the first; the ones the pace holds back
    go to the delivery service's schedule, no attempt spent, and are sent from there."""
    edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S, delivery_host_rps=1.0, delivery_host_burst=1)
    r = await hooks_receivers()
    paced = WEBHOOK_PACED._value.get()
    jobs = [
        (await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200?i={i}", "webhooks": [{"url": r.url}]}))["job_id"]
        for i in range(3)
    ]
    all_hooks = [await wait_hooks(redis, j, lambda h: h.get("0:state") == "delivered", timeout_s=30) for j in jobs]
    assert len(r.requests) == 3 and sorted(q.json()["job_id"] for q in r.requests) == sorted(jobs)
    senders = [h["0:sent_by"] for h in all_hooks]
    assert edge.settings.node_id in senders and "delivery-t" in senders
    assert WEBHOOK_PACED._value.get() > paced
    assert all(h["0:attempts"] == "1" for h in all_hooks)  # held back: no attempt spent
    assert all("0:edge" not in h for h in all_hooks if h["0:sent_by"] == "delivery-t")  # no longer the edge's to send


async def test_the_outbound_policy_applies_to_the_edges_webhooks(http, start_edge, delivery, redis, api_key, target, hooks_receivers):
    """A production edge: the target is allow-listed, the webhook's name resolves to a loopback address that is not."""
    r = await hooks_receivers()
    edge = await start_edge(
        "iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port, r.port)
    )
    await use_resolver(edge, {"allowed.test": ["127.0.0.1"], "hook.test": ["127.0.0.2"]})
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"http://allowed.test:{target.port}/status/200", "webhooks": [{"url": f"http://hook.test:{r.port}/in"}]},
    )
    hooks = await wait_hooks(redis, job["job_id"], lambda h: h.get("0:state") == "dead")
    assert hooks["0:dead_reason"] == "outbound_blocked" and "loopback" in hooks["0:last_error"] and "127.0.0.2" not in hooks["0:last_error"]
    assert hooks["0:attempts"] == "1" and r.requests == []


async def test_webhooks_the_edge_has_no_room_for_go_to_delivery_at_once(http, start_edge, delivery, redis, api_key, target):
    """Room for one job's webhooks (the first one's POST held open): the next job's go to the delivery service at
    once, long before their grace (an hour here) is up."""
    edge = await start_edge("iad", edge_webhook_grace_s=3600, executor_concurrency=1, delivery_concurrency=1)
    hold = HoldingReceiver(hold=1)
    await hold.start()
    handed = WEBHOOK_HANDED_OVER._value.get()
    try:
        first = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200?i=0", "webhooks": [{"url": hold.url}]})
        await hold.wait_for(1)  # the edge's one place is taken
        second = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200?i=1", "webhooks": [{"url": hold.url}]})
        hooks = await wait_hooks(redis, second["job_id"], lambda h: h.get("0:state") == "delivered")
        assert hooks["0:sent_by"] == "delivery-t" and WEBHOOK_HANDED_OVER._value.get() - handed == 1
        hold.release.set()
        hooks = await wait_hooks(redis, first["job_id"], lambda h: h.get("0:state") == "delivered")
        assert hooks["0:sent_by"] == edge.settings.node_id
        assert [r.json()["job_id"] for r in hold.requests] == [first["job_id"], second["job_id"]]
    finally:
        await hold.stop()


async def test_the_payload_the_edge_builds_without_reading_the_job_back_is_the_records(
    http, start_edge, coordinator, delivery, redis, api_key, target, hooks_receivers, monkeypatch
):
    # finish.lua answers what the payload needs besides what the edge sent it: no read back for the job's own
    # hand-off. Whatever the job went through, the body is what the record gives (common/webhooks.py build_payload).
    import orjson

    from ezthrottle_server.common.webhooks import build_payload, read_final_job
    from ezthrottle_server.edge import webhooks as edge_webhooks

    read_back: list[str] = []

    async def spied(batch: Any, job_id: str, answered_by: str) -> Any:
        read_back.append(job_id)
        return await read_final_job(batch, job_id, answered_by)

    monkeypatch.setattr(edge_webhooks, "read_final_job", spied)
    edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S, retry_backoff_base_s=0.01, retry_backoff_cap_s=0.05)
    await set_secret(http, edge, api_key)
    r = await hooks_receivers()
    hook = [{"url": r.url}]
    specs = [
        {"url": f"{target.url}/status/200", "idempotent_key": "edge-payload-1", "metadata": {"k": "v"}},
        {"url": target.script("edge-payload-flaky", 503, 503, 200)},  # three attempts
        {"url": f"{target.url}/status/404"},  # failed, with its reason
        {"url": f"{target.url}/echo", "on_success": {"url": f"{target.url}/echo?step=2"}},  # a chain: the workflow section
    ]
    ids = [(await submit(http, edge.url, api_key, {**spec, "webhooks": hook}))["job_id"] for spec in specs]
    for job_id in ids:
        await wait_hooks(redis, job_id, lambda h: h.get("quorum_met_ms"))
    bodies = {req.json()["job_id"]: req.body for req in r.requests}
    batch = Batcher(redis)
    for job_id in ids:
        record, attempts = await read_final_job(batch, job_id, job_id)
        assert bodies[job_id] == build_payload(job_id, record, orjson.loads(record["spec"]), attempts), job_id
    views = [orjson.loads(bodies[j]) for j in ids]
    assert [v["status"] for v in views] == ["success", "success", "failed", "success"]
    assert views[0]["idempotent_key"] == "edge-payload-1" and views[1]["attempts"] == 3 and views[2]["error"] == "non_retryable_status"
    assert views[3]["workflow"]["root_job_id"] == ids[3]
    assert read_back == []


async def test_a_jobs_only_webhook_is_posted_first_and_planned_by_its_record_with_no_claim(
    http, start_edge, delivery, redis, api_key, target, hooks_receivers, monkeypatch
):
    # The usual job, one webhook: the edge POSTs it and its record writes the plan delivery_claim.lua would
    # have written, in one step (no claim of its own). Two webhooks still take the claim first.
    from ezthrottle_server.edge.webhooks import EdgeWebhooks

    claims: list[str] = []
    claim = EdgeWebhooks._claim_handoff

    async def spied(self: Any, plan: Any, member: str, partition: int) -> int:
        claims.append(member)
        return await claim(self, plan, member, partition)

    monkeypatch.setattr(EdgeWebhooks, "_claim_handoff", spied)
    edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S)
    r1, r2 = await hooks_receivers(), await hooks_receivers()
    one = (await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": r1.url}]}))["job_id"]
    hooks = await wait_hooks(redis, one, lambda h: h.get("quorum_met_ms"))
    assert claims == []
    assert hooks["count"] == "1" and hooks["quorum"] == "1" and hooks["votes"] == "1" and hooks["0:url"] == r1.url
    assert hooks["0:state"] == "delivered" and hooks["0:attempts"] == "1" and hooks["0:vote"] == "1" and hooks["0:regions"] == ""
    assert hooks["0:edge"] == hooks["0:sent_by"] == edge.settings.node_id and hooks["job_status"] == "success"
    assert hooks["customer"] == "acme" and int(hooks["job_finished_ms"]) <= int(hooks["planned_ms"]) <= int(hooks["0:delivered_ms"])
    assert r1.requests[0].body == hooks["payload"].encode()
    assert 0 < await redis.ttl(keys.job_webhooks(one)) <= edge.settings.job_ttl_s
    await nothing_left_for_delivery(redis, one)
    spec = {"url": f"{target.url}/status/200?two", "webhooks": [{"url": r1.url}, {"url": r2.url}]}  # not the first's duplicate
    two = (await submit(http, edge.url, api_key, spec))["job_id"]
    await wait_hooks(redis, two, lambda h: h.get("quorum_met_ms"))
    assert claims == [two]
    await asyncio.sleep(3 * GRACE_S)  # the delivery service sends no second copy of either
    assert [len(r1.requests), len(r2.requests)] == [2, 1]


async def test_a_hand_off_the_delivery_service_took_during_the_edges_post_is_its_alone(
    http, start_edge, delivery, redis, api_key, target, caplog
):
    # The edge POSTs a job's only webhook before claiming it. Should the delivery service take the hand-off
    # meanwhile (a POST slower than the grace and the hold the edge adds), the edge's record writes nothing:
    # the webhook is the delivery service's, sent again (the same webhook-id) and recorded once.
    from ezthrottle_server.common import delivery_scripts
    from ezthrottle_server.common.scripting import register

    hold = HoldingReceiver(hold=1)
    await hold.start()
    try:
        edge = await start_edge("iad", edge_webhook_grace_s=GRACE_S, delivery_timeout_s=10.0)
        job_id = (await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": hold.url}]}))["job_id"]
        await hold.wait_for(1)  # the edge's POST, held open
        p = keys.job_partition(job_id)
        assert await redis.exists(keys.job_webhooks(job_id)) == 0
        sweep = register(redis, "delivery_sweep")
        took = await delivery_scripts.sweep(
            lambda keys, args: sweep(keys=keys, args=args), p, job_id, ("any", *edge.settings.region_ids), now_ms=2**50
        )
        assert took  # as the delivery service's sweep would, its time passed
        hooks = await wait_hooks(redis, job_id, lambda h: h.get("0:state") == "delivered")  # its own send (answered at once)
        with caplog.at_level(logging.INFO, logger="ezthrottle_server.common.webhooks"):
            hold.release.set()  # the edge's POST is answered now: its record finds the hand-off gone
            deadline = time.monotonic() + 10
            while not any("took it over during this POST" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the edge never recorded its POST"
                await asyncio.sleep(0.02)
        after = await redis.hgetall(keys.job_webhooks(job_id))
        assert after == hooks  # nothing of the edge's written over the delivery service's record
        assert after["0:sent_by"] == "delivery-t" and after["votes"] == "1" and after["0:attempts"] == "1" and "0:edge" not in after
        first, second = hold.requests[:2]
        assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
        await nothing_left_for_delivery(redis, job_id)
    finally:
        await hold.stop()

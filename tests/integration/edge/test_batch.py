"""``POST /api/v1/jobs/batch``: many jobs in one request, against a real Redis and a real edge app.

Every job is checked before any is accepted (one invalid job refuses the
batch and nothing is written); then each is accepted as a single submission
would be, and the answer gives one result per job, in order.
"""

import asyncio
import time
from types import SimpleNamespace

import pytest

from ezthrottle_server.common.metrics import ACCEPT_TO_SEND
from ezthrottle_server.common.quotas import Tier
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.edge.test_fast_path import warm
from support.jobs import auth, job_records, submit, wait_final

pytestmark = pytest.mark.asyncio

BATCH = "/api/v1/jobs/batch"
DEEP = b'{"a": ' * 40 + b"1" + b"}" * 40  # metadata nested 40 levels deep


async def post_batch(http, edge, key, body=None, *, raw=None, headers=None):
    hdrs = {**auth(key), "Content-Type": "application/json", **(headers or {})}
    kwargs = {"data": raw} if raw is not None else {"json": body}
    async with http.post(f"{edge.url}{BATCH}", headers=hdrs, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_each_job_is_accepted_in_order_runs_and_its_webhook_arrives(http, edge, api_key, target, receiver, redis):
    jobs = [
        {"url": f"{target.url}/echo?n={i}", "method": "POST", "body": f"b{i}", "webhooks": [{"url": f"{receiver.url}/hook"}]}
        for i in range(5)
    ]
    jobs[2]["idempotent_key"] = "mine-2"
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 200
    results = body["jobs"]
    assert [r["status"] for r in results] == ["queued"] * 5
    assert results[2]["idempotent_key"] == "mine-2"
    assert len({r["job_id"] for r in results}) == 5
    for i, r in enumerate(results):  # in order: the i-th result is the i-th job
        view = await wait_final(http, edge.url, api_key, r["job_id"])
        assert view["status"] == "success" and view["url"] == jobs[i]["url"]
    await target.wait_for(5, "/echo")
    hooks = await receiver.wait_for(5)
    assert sorted(h.json()["job_id"] for h in hooks) == sorted(r["job_id"] for r in results)
    assert len(await job_records(redis)) == 5


async def test_one_invalid_job_refuses_the_batch_naming_it_and_nothing_is_written(http, edge, api_key, target, redis):
    jobs = [{"url": f"{target.url}/echo?n={i}"} for i in range(5)]
    jobs[3]["url"] = "file:///etc/passwd"
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 400
    assert body["error"]["code"] == "invalid_field" and body["error"]["field"] == "jobs[3].url"
    assert body["error"]["message"].startswith("jobs[3].url:")
    jobs[3] = {"url": f"{target.url}/echo", "on_success": {"url": f"{target.url}/x", "nope": 1}}
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 400 and body["error"]["code"] == "unknown_field" and body["error"]["field"] == "jobs[3].on_success.nope"
    jobs[3] = "not a job"
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 400 and body["error"]["code"] == "invalid_request" and body["error"]["field"] == "jobs[3]"
    assert await job_records(redis) == []
    assert target.matching("/echo") == []


async def test_a_job_the_outbound_policy_refuses_refuses_the_batch(http, start_edge, api_key, redis):
    # loopback refused but 127.0.0.1 allowed: the second job's webhook (127.0.0.2, never contacted) is the one refused
    edge = await start_edge("iad", outbound_allow_loopback=False, outbound_allow_cidrs=("127.0.0.1/32",))
    jobs = [{"url": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b", "webhooks": [{"url": "http://127.0.0.2:9/hook"}]}]
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 422 and body["error"]["code"] == "outbound_blocked" and body["error"]["field"] == "jobs[1].webhooks[0].url"
    assert await job_records(redis) == []


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        (b"{nope", 400, "invalid_json", None),
        (b"", 400, "invalid_json", None),
        (b'[{"url": "http://127.0.0.1:9/x"}]', 400, "invalid_request", None),
        (b"{}", 400, "missing_field", "jobs"),
        (b'{"jobs": {"url": "http://127.0.0.1:9/x"}}', 400, "invalid_field", "jobs"),
        (b'{"jobs": []}', 400, "invalid_field", "jobs"),
        (b'{"jobs": [{"url": "http://127.0.0.1:9/x"}], "extra": 1}', 400, "unknown_field", "extra"),
        (b'{"jobs": [{"url": "http://127.0.0.1:9/x"}, 7]}', 400, "invalid_request", "jobs[1]"),
        (
            b'{"jobs": [{"url": "http://127.0.0.1:9/x", "metadata": ' + DEEP + b"}]}",
            400,
            "invalid_field",
            "jobs[0].metadata",
        ),
    ],
)
async def test_hostile_bodies_get_a_json_4xx_and_nothing_is_written(http, edge, api_key, redis, raw, status, code, field):
    got, body = await post_batch(http, edge, api_key, raw=raw)
    assert (got, body["error"]["code"]) == (status, code), body
    assert body["error"].get("field") == field and body["error"]["message"]
    assert await job_records(redis) == []


async def test_too_many_jobs_and_bodies_over_the_limits_are_refused(http, start_edge, api_key, redis):
    edge = await start_edge("iad", max_body_bytes=1000, max_batch_jobs=3)  # a batch's body: 3 x 1000 bytes
    one = {"url": "http://127.0.0.1:9/x"}
    status, body = await post_batch(http, edge, api_key, {"jobs": [one] * 4})
    assert status == 400 and body["error"]["field"] == "jobs" and "at most 3" in body["error"]["message"]

    status, body = await post_batch(http, edge, api_key, {"jobs": [{**one, "body": "a" * 1200}] * 3})  # 3.6 kB
    assert status == 413 and body["error"]["code"] == "payload_too_large"

    # within the batch's limit, but one job is larger than a single submission may be
    jobs = [one, {**one, "body": "a" * 1500}, one]
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 413 and body["error"]["code"] == "payload_too_large" and body["error"]["field"] == "jobs[1]"

    async def chunks():  # chunked, without a Content-Length: the same limits
        yield b'{"jobs": [{"url": "http://127.0.0.1:9/x", "body": "'
        yield b"a" * 5000
        yield b'"}]}'

    status, body = await post_batch(http, edge, api_key, raw=chunks())
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert await job_records(redis) == []
    # ... and two jobs of 900 bytes each are fine (1.8 kB: more than one single body)
    status, body = await post_batch(http, edge, api_key, {"jobs": [{**one, "body": "a" * 900}, {**one, "body": "b" * 900}]})
    assert status == 200 and [r["status"] for r in body["jobs"]] == ["queued", "queued"]


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer ezt_live_nope"])
async def test_bad_keys_get_401_and_nothing_is_written(http, edge, redis, header):
    headers = {"Authorization": header} if header else {}
    async with http.post(f"{edge.url}{BATCH}", json={"jobs": [{"url": "http://127.0.0.1:9/x"}]}, headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    assert await job_records(redis) == []


async def test_a_repeated_key_in_one_batch_is_a_duplicate_of_the_first(http, edge, api_key, target, redis):
    earlier = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "idempotent_key": "old"})
    jobs = [
        {"url": f"{target.url}/echo?a", "idempotent_key": "k"},
        {"url": f"{target.url}/echo?b", "idempotent_key": "k"},
        {"url": f"{target.url}/echo?c", "idempotent_key": "old"},
        {"url": f"{target.url}/echo?d", "method": "POST", "body": "same"},
        {"url": f"{target.url}/echo?d", "method": "POST", "body": "same"},  # HASH: the same request
    ]
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 200
    r = body["jobs"]
    assert [x["status"] for x in r] == ["queued", "duplicate", "duplicate", "queued", "duplicate"]
    assert r[1]["job_id"] == r[0]["job_id"] and r[1]["idempotent_key"] == "k"
    assert r[2]["job_id"] == earlier["job_id"]
    assert r[4]["job_id"] == r[3]["job_id"]
    assert len(await job_records(redis)) == 3
    await target.wait_for(3, "/echo")


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_quota_is_per_job_and_a_job_over_it_is_an_error_in_its_place(http, start_edge, api_key, target, redis, partitions):
    edge = await start_edge("iad", tiers={"free": Tier("free", 2, 3)}, partitions=partitions)
    later_ms = int(time.time() * 1000) + 3_600_000  # parked, never sent
    jobs = [{"url": f"{target.url}/echo", "body": str(i), "retry_at": later_ms} for i in range(5)]
    status, body = await post_batch(http, edge, api_key, {"jobs": jobs})
    assert status == 200
    results = body["jobs"]
    accepted = [r for r in results if "job_id" in r]
    refused = [r["error"] for r in results if "error" in r]
    assert len(accepted) == 3 and len(refused) == 2
    assert {e["code"] for e in refused} == {"quota_exceeded"}
    assert all(e["retry_after_s"] > 0 and "free" in e["message"] for e in refused)
    if partitions == 1:  # one pipeline, in order: the first three fit
        assert [("job_id" in r) for r in results] == [True, True, True, False, False]
    assert len(await job_records(redis)) == 3


def fast_sends() -> float:
    return sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets)


async def test_jobs_taken_at_acceptance_are_sent_once_the_answer_is_written(http, redis, edge, api_key, target):
    # Two domains (one server): the fast path takes one job of a scope at a time.
    urls = [target.url, target.url.replace("127.0.0.1", "localhost")]
    limits = "".join(f"  {domain_of(url)}: {{rps: 50, max_concurrent: 8}}\n" for url in urls)
    await apply_overrides(redis, parse_overrides(f"domains:\n{limits}"))  # one set of overrides: each call replaces it
    for url in urls:
        await warm(http, edge, api_key, SimpleNamespace(url=url))
    first = await submit(http, edge.url, api_key, {"url": f"{urls[0]}/echo?n=single"})  # loads accept.lua into this Redis
    await wait_final(http, edge.url, api_key, first["job_id"])
    await asyncio.sleep(0.05)  # the next token (50/s)
    before = fast_sends()
    status, body = await post_batch(http, edge, api_key, {"jobs": [{"url": f"{urls[i % 2]}/echo?n={i}"} for i in range(4)]})
    assert status == 200
    for r in body["jobs"]:  # each sent once; a taken job left unsent would wait for its lease (30 s) to expire
        view = await wait_final(http, edge.url, api_key, r["job_id"], timeout_s=5)
        assert view["status"] == "success" and len(view["attempts"]) == 1
    assert fast_sends() - before == 2  # the first of each domain went from its acceptance to its send, without a stream entry
    assert len(target.matching("/echo")) == 7
    async with asyncio.timeout(5):
        while edge.app[CTX].worker.inflight:
            await asyncio.sleep(0.02)

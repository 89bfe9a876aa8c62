"""The published ``ezthrottle==1.3.0``, unchanged, executing steps against real edges, as its users' code does.

Regression (#17 of the second round): a job that took the fast path (its
domain known and idle) answered the proxy with the bare 201 of
``/api/v1/jobs``, written early, instead of the envelope, and 1.3.0 raised
``EZThrottleError("Proxy request failed: ...")`` for a job that ran. Tests
that used fresh domains never took the fast path; these warm the domain
first and go on submitting to it.

Three edges (iad, lax, ord), a coordinator and a delivery worker run
in-process; the target and the webhook receiver are real servers on loopback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio

from ezthrottle_server.common.metrics import ACCEPT_TO_SEND
from ezthrottle_server.delivery.app import create_app as create_delivery
from support.jobs import auth, get_job, submit, wait_final
from support.services import app_starter

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

NO_RETRIES = {"max_retries": 0, "max_reroutes": 0}


@pytest_asyncio.fixture
async def delivery(redis, redis_url):
    settings = {"delivery_backoff_base_s": 0.05, "delivery_backoff_cap_s": 0.2, "delivery_poll_s": 0.01}
    async with app_starter("delivery", redis_url, create_delivery, **settings) as start:
        yield await start()


@pytest_asyncio.fixture
async def cluster(start_edge, coordinator, delivery):
    """Three regions' edges; the SDK talks to iad's."""
    iad = await start_edge("iad")
    await start_edge("lax")
    await start_edge("ord")
    return iad


def step(*calls: tuple[str, list[Any]] | tuple[str, list[Any], dict[str, Any]]) -> dict[str, Any]:
    """A Step built by the published SDK: ``step(("url", [u]), ("method", ["POST"]))``."""
    return {"$step": [[c[0], c[1], c[2] if len(c) > 2 else {}] for c in calls]}


async def execute(published: Any, edge: Any, api_key: str, *runs: dict[str, Any]) -> list[Any]:
    """Run steps through the published SDK in its own process; every run must succeed."""
    data = {"api_key": api_key, "url": edge.url, "runs": list(runs)}
    results = await asyncio.to_thread(published.run, {"mode": "steps", "data": data})
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors
    return [r["ok"] for r in results]


def taken_count() -> float:
    return sum(b.get() for b in ACCEPT_TO_SEND.labels("iad")._buckets)


async def hooks_at(receiver: Any, path: str, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    return [r.json() for r in await receiver.wait_for(count, path=path, timeout_s=timeout_s)]


async def test_a_warmed_idle_domain_answers_every_proxy_submission_with_the_envelope(published, cluster, api_key, target, http):
    """The reproduction: submissions to one domain, spaced so that it is idle each time, all through the proxy."""
    first = await submit(http, cluster.url, api_key, {"url": f"{target.url}/echo?warm=1"})
    await wait_final(http, cluster.url, api_key, first["job_id"])
    before = taken_count()
    statuses = []
    for n in range(3):
        await asyncio.sleep(0.6)  # past the domain's emission interval (2/s): idle again
        envelope = {
            "target_url": f"{cluster.url}/api/v1/jobs",
            "method": "POST",
            "headers": {},
            "body": f'{{"url": "{target.url}/echo?n={n}"}}',
        }
        async with http.post(f"{cluster.url}/api/v1/proxy", json=envelope, headers=auth(api_key)) as resp:
            statuses.append(resp.status)
            body = await resp.json()
        assert body["status"] == "allowed" and body["forwarded_response"]["status_code"] == 201, body
    assert statuses == [200, 200, 200]
    assert taken_count() - before >= 2  # the fast path was taken (the regression's condition)
    await target.wait_for(4, path="/echo")


async def test_steps_on_a_warmed_idle_domain_and_a_busy_one(published, cluster, api_key, target, http):
    warm = await submit(http, cluster.url, api_key, {"url": f"{target.url}/echo?warm=1"})
    await wait_final(http, cluster.url, api_key, warm["job_id"])
    before = taken_count()
    idle = [
        {"step": step(("url", [f"{target.url}/echo?idle={n}"]), ("method", ["POST"]), ("body", ['{"n": 1}']))["$step"]} for n in range(3)
    ]
    pause = {"sleep_s": 0.6}  # past the domain's emission interval (2/s): idle again
    results = await execute(published, cluster, api_key, pause, idle[0], pause, idle[1], pause, idle[2])
    assert [r["status"] for r in results[1::2]] == ["queued"] * 3
    async with asyncio.timeout(5):
        while taken_count() - before < 3:  # each went the fast path (the regression's condition)
            await asyncio.sleep(0.02)
    busy = [{"step": step(("url", [f"{target.url}/echo?busy={n}"]))["$step"]} for n in range(6)]  # 6 at once, 2/s: they wait
    results = await execute(published, cluster, api_key, *busy)
    assert [r["status"] for r in results] == ["queued"] * 6 and len({r["job_id"] for r in results}) == 6
    for r in results:
        assert (await wait_final(http, cluster.url, api_key, r["job_id"], timeout_s=20))["status"] == "success"


async def test_a_race_across_three_regions_says_racing_and_has_one_winner(published, cluster, api_key, target, receiver, http):
    race = step(
        ("url", [f"{target.url}/echo?race=1"]),
        ("regions", [["iad", "lax", "ord"]]),
        ("execution_mode", ["race"]),
        ("webhooks", [[{"url": f"{receiver.url}/race"}]]),
    )
    [result] = await execute(published, cluster, api_key, {"step": race["$step"]})
    assert result["status"] == "racing"
    done = await wait_final(http, cluster.url, api_key, result["job_id"])
    assert done["status"] == "success" and done["winner_region"] in ("iad", "lax", "ord")
    [hook] = await hooks_at(receiver, "/race", 1)
    assert hook["job_id"] == result["job_id"] and hook["status"] == "success"


async def test_a_fallback_chains_webhook_carries_the_steps_id_and_key_and_the_chains_outcome(
    published, cluster, api_key, target, receiver, http
):
    """Primary 500 -> fallback on [500, 502, 503] that is slow -> fallback on a 500 ms timeout that succeeds."""
    chain = step(
        ("url", [f"{target.url}/status/500"]),
        ("retry_policy", [NO_RETRIES]),
        ("idempotent_key", ["chain-1"]),
        ("webhooks", [[{"url": f"{receiver.url}/chain"}]]),
        ("fallback", [step(("url", [f"{target.url}/delay/2500"]), ("retry_policy", [NO_RETRIES]))], {"trigger_on_error": [500, 502, 503]}),
        ("fallback", [step(("url", [f"{target.url}/echo?last=1"]), ("retry_policy", [NO_RETRIES]))], {"trigger_on_timeout": 500}),
    )
    [result] = await execute(published, cluster, api_key, {"step": chain["$step"]})
    assert result["status"] == "queued" and result["idempotent_key"] == "chain-1"
    [hook] = await hooks_at(receiver, "/chain", 1)
    assert hook["job_id"] == result["job_id"] and hook["idempotent_key"] == "chain-1"
    assert hook["status"] == "success" and hook["response"]["status_code"] == 200
    # The slow fallback ends after the last one: it was taken over, so it delivers nothing more.
    view = await get_job(http, cluster.url, api_key, result["job_id"])
    [slow] = view["workflow"]["children"]
    assert (await wait_final(http, cluster.url, api_key, slow["job_id"], timeout_s=15))["status"] == "success"
    [last] = slow["children"] or (await get_job(http, cluster.url, api_key, slow["job_id"]))["workflow"]["children"]
    assert (await wait_final(http, cluster.url, api_key, last["job_id"]))["status"] == "success"
    assert hook["workflow"]["answered_by"] == last["job_id"]  # which job of the chain answered
    primary = await get_job(http, cluster.url, api_key, result["job_id"])
    assert primary["webhooks"]["quorum_met"] is True
    await asyncio.sleep(0.5)  # room for a wrong second delivery to show up
    assert len(receiver.matching("/chain")) == 1


async def test_a_failing_chain_delivers_once_with_the_last_failure(published, cluster, api_key, target, receiver, http):
    chain = step(
        ("url", [f"{target.url}/status/500"]),
        ("retry_policy", [NO_RETRIES]),
        ("webhooks", [[{"url": f"{receiver.url}/fails"}]]),
        ("fallback", [step(("url", [f"{target.url}/status/503"]), ("retry_policy", [NO_RETRIES]))], {"trigger_on_error": [500]}),
    )
    [result] = await execute(published, cluster, api_key, {"step": chain["$step"]})
    [hook] = await hooks_at(receiver, "/fails", 1)
    assert hook["job_id"] == result["job_id"] and hook["status"] == "failed" and hook["response"]["status_code"] == 503


async def test_a_fallback_whose_trigger_does_not_match_delivers_the_primarys_outcome(published, cluster, api_key, target, receiver):
    chain = step(
        ("url", [f"{target.url}/status/404"]),
        ("retry_policy", [NO_RETRIES]),
        ("webhooks", [[{"url": f"{receiver.url}/nomatch"}]]),
        ("fallback", [step(("url", [f"{target.url}/echo?never=1"]))], {"trigger_on_error": [500]}),
    )
    [result] = await execute(published, cluster, api_key, {"step": chain["$step"]})
    [hook] = await hooks_at(receiver, "/nomatch", 1)
    assert hook["job_id"] == result["job_id"] and hook["status"] == "failed" and hook["response"]["status_code"] == 404
    assert hook["workflow"]["answered_by"] == result["job_id"]  # the step itself: no fallback ran
    assert not [r for r in target.matching("/echo") if r.query.get("never")]


async def test_on_success_delivers_the_parents_and_the_childs_webhooks(published, cluster, api_key, target, receiver, http):
    chained = step(
        ("url", [f"{target.url}/echo?parent=1"]),
        ("idempotent_key", ["parent-1"]),
        ("webhooks", [[{"url": f"{receiver.url}/parent"}]]),
        ("on_success", [step(("url", [f"{target.url}/echo?child=1"]), ("webhooks", [[{"url": f"{receiver.url}/child"}]]))]),
    )
    [result] = await execute(published, cluster, api_key, {"step": chained["$step"]})
    [parent] = await hooks_at(receiver, "/parent", 1)
    [child] = await hooks_at(receiver, "/child", 1)
    assert parent["job_id"] == result["job_id"] and parent["idempotent_key"] == "parent-1" and parent["status"] == "success"
    [kid] = (await get_job(http, cluster.url, api_key, result["job_id"]))["workflow"]["children"]
    child_view = await get_job(http, cluster.url, api_key, kid["job_id"])
    assert child["job_id"] == kid["job_id"] != result["job_id"]
    assert child["idempotent_key"] == child_view["idempotent_key"] != "parent-1" and child["status"] == "success"


async def test_hash_and_unique_keys_and_auto_forward(published, cluster, api_key, target, http):
    hashed = {
        "step": step(("url", [f"{target.url}/echo?hash=1"]), ("idempotent_strategy", [{"$enum": "IdempotentStrategy.HASH"}]))["$step"]
    }
    unique = {
        "step": step(("url", [f"{target.url}/echo?unique=1"]), ("idempotent_strategy", [{"$enum": "IdempotentStrategy.UNIQUE"}]))["$step"]
    }
    forwarded = {
        "auto_forward": {"url": f"{target.url}/echo?forwarded=1", "method": "POST", "body": '{"amount": 1000}', "idempotent_key": "order-7"}
    }
    h1, h2, u1, u2, f1, f2 = await execute(published, cluster, api_key, hashed, hashed, unique, unique, forwarded, forwarded)
    assert h1["status"] == "queued" and h2 == {"job_id": h1["job_id"], "status": "duplicate", "idempotent_key": h1["idempotent_key"]}
    assert u1["status"] == u2["status"] == "queued" and u1["job_id"] != u2["job_id"] and u1["idempotent_key"] != u2["idempotent_key"]
    assert f1["status"] == "queued" and f1["idempotent_key"] == "order-7" and f2["status"] == "duplicate"
    for job in (h1, u1, u2, f1):
        assert (await wait_final(http, cluster.url, api_key, job["job_id"]))["status"] == "success"
    assert [r.body for r in target.matching("/echo") if r.query.get("forwarded")] == [b'{"amount": 1000}']

"""Server-side workflow chains: on_success, fallbacks, on_failure, FRUGAL hand-off."""

import asyncio

import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.jobs import get_job, submit, wait_final
from support.services import RunningApp, make_settings

pytestmark = pytest.mark.asyncio
NO_REROUTE = {"max_reroutes": 0, "max_retries": 0}


@pytest_asyncio.fixture(autouse=True)
async def unpaced(redis, target):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))


async def child_of(http, edge, key, job_id, relation, timeout_s=10.0):
    """Wait until the job's workflow lists a child for ``relation``; return the child's final view."""
    async with asyncio.timeout(timeout_s):
        while True:
            view = await get_job(http, edge.url, key, job_id)
            kids = [c for c in (view.get("workflow") or {}).get("children", []) if c["relation"] == relation]
            if kids:
                return await wait_final(http, edge.url, key, kids[0]["job_id"])
            await asyncio.sleep(0.05)


async def test_on_success_starts_a_child_job_of_its_own(http, edge, coordinator, api_key, target):
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"{target.url}/echo?step=1", "on_success": {"url": f"{target.url}/echo?step=2", "method": "POST", "body": "next"}},
    )
    parent = await wait_final(http, edge.url, api_key, job["job_id"])
    assert parent["status"] == "success"
    child = await child_of(http, edge, api_key, job["job_id"], "on_success")
    assert child["status"] == "success" and child["job_id"] != job["job_id"]
    assert child["workflow"]["parent_job_id"] == job["job_id"] and child["workflow"]["root_job_id"] == job["job_id"]
    assert child["workflow"]["relation"] == "on_success"
    assert child["idempotent_key"] == f"{parent['idempotent_key']}:on_success"
    [second] = [r for r in target.matching("/echo") if r.query.get("step") == "2"]
    assert second.method == "POST" and second.body == b"next"
    tree = (await get_job(http, edge.url, api_key, job["job_id"]))["workflow"]
    assert tree["continuation"] == "on_success"
    assert tree["children"] == [{"relation": "on_success", "job_id": child["job_id"], "status": "success", "children": []}]


async def test_a_child_counts_among_its_customers_jobs_not_final_until_it_ends(http, redis, edge, coordinator, api_key, target):
    """The per-customer admission ceiling counts children like submissions, and takes them off when they end."""
    job = await submit(
        http, edge.url, api_key, {"url": f"{target.url}/echo?step=1", "on_success": {"url": f"{target.url}/delay/1500?step=2"}}
    )
    partition = keys.job_partition(job["job_id"])
    customer = await redis.hget(keys.job(job["job_id"]), "customer")
    async with asyncio.timeout(10):
        while not (await get_job(http, edge.url, api_key, job["job_id"])).get("workflow", {}).get("children"):
            await asyncio.sleep(0.05)
    [kid] = (await get_job(http, edge.url, api_key, job["job_id"]))["workflow"]["children"]
    assert await redis.hget(keys.job(kid["job_id"]), "counted") == "1"
    assert await redis.hget(keys.queued(partition), customer) == "1"  # the parent is final, its child is not
    assert (await wait_final(http, edge.url, api_key, kid["job_id"]))["status"] == "success"
    assert await redis.hget(keys.queued(partition), customer) is None


async def test_a_matching_fallback_stands_in_and_inherits_the_continuation(http, edge, coordinator, api_key, target):
    payload = {
        "url": f"{target.url}/status/500",
        "retry_policy": NO_REROUTE,
        "fallback_job": {"url": f"{target.url}/echo?step=backup", "trigger": {"type": "on_error", "codes": [500, 502]}},
        "on_success": {"url": f"{target.url}/echo?step=notify"},
    }
    job = await submit(http, edge.url, api_key, payload)
    parent = await wait_final(http, edge.url, api_key, job["job_id"])
    assert parent["status"] == "failed" and parent["result"]["status_code"] == 500
    backup = await child_of(http, edge, api_key, job["job_id"], "fallback")
    assert backup["status"] == "success"
    notify = await child_of(http, edge, api_key, backup["job_id"], "on_success")
    assert notify["status"] == "success" and notify["workflow"]["root_job_id"] == job["job_id"]
    assert [r.query.get("step") for r in target.matching("/echo")] == ["backup", "notify"]


async def test_fallbacks_chain_two_deep(http, edge, coordinator, api_key, target):
    payload = {
        "url": f"{target.url}/status/502",
        "retry_policy": NO_REROUTE,
        "fallback_job": {
            "url": f"{target.url}/status/503",
            "retry_policy": NO_REROUTE,
            "trigger": {"type": "on_error", "codes": [502]},
            "fallback_job": {"url": f"{target.url}/echo?step=last", "trigger": {"type": "on_error", "codes": [503]}},
        },
    }
    job = await submit(http, edge.url, api_key, payload)
    first = await child_of(http, edge, api_key, job["job_id"], "fallback")
    assert first["status"] == "failed"
    last = await child_of(http, edge, api_key, first["job_id"], "fallback")
    assert last["status"] == "success" and target.matching("/echo")[0].query["step"] == "last"


async def test_a_trigger_that_does_not_match_goes_to_on_failure_or_ends(http, edge, coordinator, api_key, target):
    chained = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/status/404",
            "fallback_job": {"url": f"{target.url}/echo?step=never", "trigger": {"type": "on_error", "codes": [500]}},
            "on_failure": {"url": f"{target.url}/echo?step=alert"},
        },
    )
    alert = await child_of(http, edge, api_key, chained["job_id"], "on_failure")
    assert alert["status"] == "success"
    ended = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/status/404?x=2",
            "fallback_job": {"url": f"{target.url}/echo?step=never2", "trigger": {"type": "on_error", "codes": [500]}},
        },
    )
    view = await wait_final(http, edge.url, api_key, ended["job_id"])
    await asyncio.sleep(0.5)  # give the coordinator time to (wrongly) start something
    view = await get_job(http, edge.url, api_key, ended["job_id"])
    assert view["status"] == "failed" and view["workflow"]["children"] == []
    assert [r.query.get("step") for r in target.matching("/echo")] == ["alert"]


async def test_frugal_children_travel_to_the_client_in_the_webhook(http, redis_url, edge, coordinator, api_key, target, receiver):
    from ezthrottle_server.delivery.app import create_app as delivery_app

    settings = make_settings("delivery", redis_url, node_id="delivery-wf")
    delivery = await RunningApp(delivery_app(settings), settings).start()
    try:
        job = await submit(
            http,
            edge.url,
            api_key,
            {
                "url": f"{target.url}/echo?step=paid",
                "webhooks": [{"url": f"{receiver.url}/hook"}],
                "on_success": {"url": f"{target.url}/echo?step=analytics", "type": "frugal"},
            },
        )
        [hook] = await receiver.wait_for(1, "/hook")
    finally:
        await delivery.stop()
    wf = hook.json()["workflow"]
    assert wf["root_job_id"] == job["job_id"] and wf["job_id"] == job["job_id"]
    [step] = wf["frugal_steps"]
    assert step["step_id"] == f"{job['job_id']}:on_success" and step["relation"] == "on_success"
    assert step["step"]["url"].endswith("step=analytics") and step["step"]["type"] == "frugal"
    await asyncio.sleep(0.5)
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert view["workflow"]["continuation"] == "on_success" and view["workflow"]["children"] == []
    assert [r.query.get("step") for r in target.matching("/echo")] == ["paid"]  # the server never ran it


async def test_on_failure_timeout_fires_once_and_a_late_success_fires_nothing(http, edge, coordinator, api_key, target):
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/delay/1200",
            "on_failure_timeout_ms": 300,
            "on_failure": {"url": f"{target.url}/echo?step=late-alert"},
            "on_success": {"url": f"{target.url}/echo?step=should-not-run"},
        },
    )
    alert = await child_of(http, edge, api_key, job["job_id"], "on_failure", timeout_s=5)
    assert alert["status"] == "success"
    assert alert["created_at_ms"] - (await get_job(http, edge.url, api_key, job["job_id"]))["created_at_ms"] < 1200
    parent = await wait_final(http, edge.url, api_key, job["job_id"])
    assert parent["status"] == "success"  # the late success is recorded...
    await asyncio.sleep(0.5)
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert [c["relation"] for c in view["workflow"]["children"]] == ["on_failure"]  # ...and fires nothing
    assert [r.query.get("step") for r in target.matching("/echo")] == ["late-alert"]


async def test_an_on_timeout_fallback_starts_when_the_job_is_slow(http, edge, coordinator, api_key, target):
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/delay/1500",
            "fallback_job": {"url": f"{target.url}/echo?step=fast-path", "trigger": {"type": "on_timeout", "timeout_ms": 300}},
        },
    )
    backup = await child_of(http, edge, api_key, job["job_id"], "fallback", timeout_s=5)
    assert backup["status"] == "success"
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    assert [r.query.get("step") for r in target.matching("/echo")] == ["fast-path"]


async def test_a_fast_job_does_not_fire_its_timers(http, edge, coordinator, api_key, target):
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo?step=quick",
            "on_failure_timeout_ms": 300,
            "on_failure": {"url": f"{target.url}/echo?step=alert"},
            "fallback_job": {"url": f"{target.url}/echo?step=backup", "trigger": {"type": "on_timeout", "timeout_ms": 300}},
        },
    )
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    await asyncio.sleep(0.8)
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert view["workflow"]["children"] == []
    assert [r.query.get("step") for r in target.matching("/echo")] == ["quick"]

"""Flow-control keys: a customer's own limit on top of the domain's (the job field ``flow_control``).

Real edges in two regions, a coordinator (a job its key holds back waits in
the delayed set), a real Redis and a loopback target. The domain allows 50
requests/s: whatever goes slower is the key's doing.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import max_in_window, submit_many
from support.jobs import auth, submit, wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest_asyncio.fixture
async def fast_domain(redis, target):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 50, max_concurrent: 8}}\n"))


def sent(target, name: str) -> list[float]:
    return sorted(r.at for r in target.matching("/echo") if name in r.query)


async def test_jobs_with_a_key_share_its_rate_and_parallelism_across_regions_and_others_go_by(
    http, redis, start_edge, coordinator, api_key, target, fast_domain
):
    edges = [await start_edge("iad"), await start_edge("lax")]
    keyed = [
        {
            "url": f"{target.url}/echo?keyed={i}",
            "regions": ["iad", "lax"][i % 2 : i % 2 + 1],
            "flow_control": {"key": "acct-1", "rate": 2, "parallelism": 1},
        }
        for i in range(8)
    ]
    free = [{"url": f"{target.url}/echo?free={i}"} for i in range(20)]
    keyed_ids = await submit_many(http, [e.url for e in edges], api_key, keyed)
    free_ids = await submit_many(http, [e.url for e in edges], api_key, free)
    for job_id in free_ids:
        assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=10))["status"] == "success"
    assert len(sent(target, "keyed")) < 8  # the domain's other work did not wait for the key
    for job_id in keyed_ids:
        assert (await wait_final(http, edges[0].url, api_key, job_id, timeout_s=30))["status"] == "success"
    times = sent(target, "keyed")
    assert len(times) == 8 and max_in_window(times) <= 2  # 2/s for the key, whichever region sent
    async with http.get(f"{edges[0].url}/api/v1/flow-control/acct-1", headers=auth(api_key)) as resp:
        state = await resp.json()
    assert resp.status == 200 and state["rate"] == 2.0 and state["parallelism"] == 1 and state["in_flight"] == 0
    async with http.get(f"{edges[0].url}/api/v1/domains/{domain_of(target.url)}", headers=auth(api_key)) as resp:
        domain_view = await resp.json()
    assert [k["key"] for k in domain_view["flow_control_keys"]] == ["acct-1"]  # the domain view lists the key's state


async def test_keys_are_per_customer(http, redis, start_edge, coordinator, api_key, other_api_key, target, fast_domain):
    edge = await start_edge("iad")
    flow = {"key": "shared-name", "rate": 1}
    ids = [
        (await submit(http, edge.url, key, {"url": f"{target.url}/echo?{who}={i}", "flow_control": flow}))["job_id"]
        for i in range(3)
        for who, key in (("a", api_key), ("b", other_api_key))
    ]
    for n, job_id in enumerate(ids):
        await wait_final(http, edge.url, api_key if n % 2 == 0 else other_api_key, job_id, timeout_s=20)
    a, b = sent(target, "a"), sent(target, "b")
    assert len(a) == len(b) == 3
    assert abs(a[0] - b[0]) < 0.5 and abs(a[-1] - b[-1]) < 0.8  # each its own 1/s, side by side, not one after the other
    async with http.get(f"{edge.url}/api/v1/flow-control/shared-name", headers=auth(other_api_key)) as resp:
        assert resp.status == 200  # its own key of that name
    async with http.get(f"{edge.url}/api/v1/flow-control/never-used", headers=auth(api_key)) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_a_retry_after_on_a_keyed_job_pauses_the_key_not_the_domain(
    http, redis, start_edge, coordinator, api_key, other_api_key, target, fast_domain
):
    edge = await start_edge("iad")
    exhausted = target.script("exhausted", (429, {"Retry-After": "3"}))
    job = await submit(http, edge.url, api_key, {"url": exhausted, "flow_control": {"key": "acct-9", "parallelism": 4}})
    await target.wait_for(1, path="/script/exhausted")
    async with asyncio.timeout(5):
        while True:
            async with http.get(f"{edge.url}/api/v1/flow-control/acct-9", headers=auth(api_key)) as resp:
                state = await resp.json()
            if state.get("paused"):
                break
            await asyncio.sleep(0.05)
    others = await submit_many(http, [edge.url], other_api_key, [{"url": f"{target.url}/echo?other={i}"} for i in range(5)])
    for job_id in others:  # the domain is not paused: another customer's jobs go at once
        view = await wait_final(http, edge.url, other_api_key, job_id, timeout_s=2.5)
        assert view["status"] == "success"
    assert len(target.matching("/script/exhausted")) == 1  # the keyed job waits out the key's pause
    assert (await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=20))["status"] == "success"


async def test_a_customer_pauses_and_resumes_its_own_key(http, redis, start_edge, coordinator, api_key, other_api_key, target, fast_domain):
    edge = await start_edge("iad")
    first = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?p=0", "flow_control": {"key": "k", "rate": 10}})
    await wait_final(http, edge.url, api_key, first["job_id"])
    async with http.post(f"{edge.url}/api/v1/flow-control/k/pause", headers=auth(other_api_key)) as resp:
        assert resp.status == 404  # another customer's key is not yours
    async with http.post(f"{edge.url}/api/v1/flow-control/k/pause", json={"for_s": -1}, headers=auth(api_key)) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "for_s"
    async with http.post(f"{edge.url}/api/v1/flow-control/k/pause", headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["paused"] is True
    held = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?p=1", "flow_control": {"key": "k", "rate": 10}})
    await asyncio.sleep(1.0)
    assert not [r for r in target.matching("/echo") if r.query.get("p") == "1"]
    async with http.post(f"{edge.url}/api/v1/flow-control/k/resume", headers=auth(api_key)) as resp:
        assert resp.status == 200 and (await resp.json())["paused"] is False
    assert (await wait_final(http, edge.url, api_key, held["job_id"], timeout_s=20))["status"] == "success"


async def test_bad_flow_control_is_refused_at_the_door(http, edge, api_key, target):
    for flow, field in [
        ({"rate": 1}, "flow_control.key"),
        ({"key": "k"}, "flow_control"),
        ({"key": "k", "rate": 0}, "flow_control.rate"),
        ({"key": "k", "parallelism": 1.5}, "flow_control.parallelism"),
        ({"key": "a\nb", "rate": 1}, "flow_control.key"),
        ({"key": "k", "rate": 1, "burst": 2}, "flow_control.burst"),
    ]:
        async with http.post(
            f"{edge.url}/api/v1/jobs", json={"url": f"{target.url}/echo", "flow_control": flow}, headers=auth(api_key)
        ) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["error"]["field"] == field, (flow, body)

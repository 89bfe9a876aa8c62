"""Racing and fanout across regions, with real edges of three regions on one Redis."""

import asyncio

import pytest
import pytest_asyncio

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(autouse=True)
async def unpaced_target(redis, target):
    """Racing is about regions, not pacing: lift the target domain's limit (2 req/s by default)."""
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))


FAST = {"retry_backoff_base_s": 0.01, "retry_backoff_cap_s": 0.05}


async def three_regions(start_edge, **overrides):
    return [await start_edge(r, **{**FAST, **overrides}) for r in ("iad", "lax", "ord")]


async def all_up(http, edge, timeout_s=5.0):
    """With a coordinator running, wait until it has judged every region up."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with http.get(f"{edge.url}/api/v1/regions") as resp:
                if all(r["state"] == "up" for r in (await resp.json())["regions"]):
                    return
            await asyncio.sleep(0.05)


def winners(view):
    return [a for a in view["attempts"] if a["decision"] == "success" and not a.get("lost")]


async def test_a_race_has_exactly_one_winner_and_keeps_the_losers_for_the_record(http, start_edge, api_key, target):
    # simulated latency: iad 20 ms, lax 80 ms, ord 50 ms (regions.yaml)
    _iad, lax, _ord = [await start_edge(r, simulate_latency=True) for r in ("iad", "lax", "ord")]
    job = await submit(http, lax.url, api_key, {"url": f"{target.url}/echo", "regions": ["iad", "lax", "ord"]})
    view = await wait_final(http, lax.url, api_key, job["job_id"])
    assert view["status"] == "success" and view["execution_mode"] == "race"
    assert len(winners(view)) == 1
    assert view["winner_region"] == winners(view)[0]["region"]
    assert sorted(view["regions"]) == ["iad", "lax", "ord"]
    await asyncio.sleep(0.3)  # let the slower regions finish: their results are kept as lost
    view = await wait_final(http, lax.url, api_key, job["job_id"])
    lost = [a for a in view["attempts"] if a.get("lost")]
    assert len(view["attempts"]) == len(target.matching("/echo"))
    assert len(lost) == len(view["attempts"]) - 1
    assert all(view["region_outcomes"][a["region"]]["lost"] for a in lost)


async def test_a_definitive_answer_ends_the_race_at_once(http, start_edge, api_key, target):
    edges = await three_regions(start_edge)
    job = await submit(http, edges[0].url, api_key, {"url": f"{target.url}/status/404", "regions": ["iad", "lax", "ord"]})
    view = await wait_final(http, edges[0].url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "non_retryable_status"


async def test_a_region_that_runs_out_drops_out_and_another_wins(http, start_edge, api_key, target):
    # iad gives up after 100 ms per attempt; lax waits long enough for the slow target
    iad = await start_edge("iad", attempt_timeout_s=0.1, **FAST)
    await start_edge("lax", attempt_timeout_s=5, **FAST)
    job = await submit(
        http, iad.url, api_key, {"url": f"{target.url}/delay/400", "regions": ["iad", "lax"], "retry_policy": {"max_retries": 1}}
    )
    view = await wait_final(http, iad.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "success" and view["winner_region"] == "lax"
    iad_attempts = [a for a in view["attempts"] if a["region"] == "iad"]
    assert iad_attempts and all("no answer" in (a["error"] or "") for a in iad_attempts)


async def test_the_job_fails_only_when_every_region_is_out(http, start_edge, coordinator, api_key, target):
    edges = await three_regions(start_edge)
    await all_up(http, edges[0])
    url = target.script("down", *([503] * 20))
    job = await submit(http, edges[1].url, api_key, {"url": url, "regions": ["iad", "lax", "ord"], "retry_policy": {"max_retries": 1}})
    view = await wait_final(http, edges[1].url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "retries_exhausted"
    assert sorted({a["region"] for a in view["attempts"]}) == ["iad", "lax", "ord"]
    assert len(view["attempts"]) == 6  # two tries in each region


async def test_an_unsafe_post_is_never_sent_twice_at_once(http, start_edge, api_key, target):
    edges = await three_regions(start_edge)
    jobs = [
        await submit(
            http,
            edges[0].url,
            api_key,
            {"url": f"{target.url}/delay/300", "method": "POST", "body": f"charge-{i}", "regions": ["iad", "lax", "ord"]},
        )
        for i in range(3)
    ]
    for job in jobs:
        view = await wait_final(http, edges[0].url, api_key, job["job_id"])
        assert view["status"] == "success" and len(winners(view)) == 1
    await asyncio.sleep(0.5)
    for i in range(3):
        sends = [r for r in target.matching("/delay/300") if r.body == f"charge-{i}".encode()]
        assert len(sends) == 1, f"charge-{i} was sent {len(sends)} times"


async def test_a_post_with_the_users_idempotency_key_races_freely(http, start_edge, api_key, target):
    edges = await three_regions(start_edge)
    payload = {
        "url": f"{target.url}/delay/200",
        "method": "POST",
        "body": "safe",
        "headers": {"Idempotency-Key": "user-key-1"},
        "regions": ["iad", "lax", "ord"],
    }
    job = await submit(http, edges[0].url, api_key, payload)
    await wait_final(http, edges[0].url, api_key, job["job_id"])
    sends = await target.wait_for(3, "/delay/200", timeout_s=5)
    assert {r.headers["Idempotency-Key"] for r in sends} == {"user-key-1"}


async def test_the_jobs_key_goes_out_as_idempotency_key(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "idempotent_key": "order-77"})
    await wait_final(http, edge.url, api_key, job["job_id"])
    assert target.matching("/echo")[0].headers["Idempotency-Key"] == "order-77"


async def test_fanout_sends_from_every_region_and_lists_each_outcome(http, start_edge, api_key, target):
    edges = await three_regions(start_edge)
    job = await submit(
        http, edges[2].url, api_key, {"url": f"{target.url}/echo", "regions": ["iad", "lax", "ord"], "execution_mode": "fanout"}
    )
    view = await wait_final(http, edges[2].url, api_key, job["job_id"])
    assert view["status"] == "success" and view["execution_mode"] == "fanout"
    assert len(target.matching("/echo")) == 3
    per_region = view["result"]["regions"]
    assert set(per_region) == {"iad", "lax", "ord"}
    assert all(r["status"] == "success" and r["result"]["status_code"] == 200 for r in per_region.values())
    assert view["result"]["status_code"] == 200
    assert {k: v["outcome"] for k, v in view["region_outcomes"].items()} == {"iad": "success", "lax": "success", "ord": "success"}


async def test_fanout_fails_unless_every_region_succeeds(http, start_edge, api_key, target):
    iad = await start_edge("iad", attempt_timeout_s=0.1, **FAST)
    await start_edge("lax", attempt_timeout_s=5, **FAST)
    job = await submit(
        http,
        iad.url,
        api_key,
        {"url": f"{target.url}/delay/300", "regions": ["iad", "lax"], "execution_mode": "fanout", "retry_policy": {"max_retries": 0}},
    )
    view = await wait_final(http, iad.url, api_key, job["job_id"], timeout_s=10)
    assert view["status"] == "failed" and view["error"].startswith("fanout_iad")
    assert view["result"]["regions"]["lax"]["status"] == "success"
    assert view["result"]["regions"]["iad"]["status"] == "failed"


async def test_reroutes_visit_each_region_once_then_stop(http, start_edge, coordinator, api_key):
    iad, _lax, _ord = await three_regions(start_edge)
    await all_up(http, iad)
    job = await submit(http, iad.url, api_key, {"url": "http://127.0.0.1:9/never", "regions": ["iad"], "retry_policy": {"max_reroutes": 5}})
    view = await wait_final(http, iad.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "reroutes_exhausted"
    assert [a["region"] for a in view["attempts"]] == ["iad", "lax", "ord"]  # preference order, each once
    assert view["regions_tried"] == ["iad", "lax", "ord"]


async def test_reroutes_skip_regions_with_no_live_node(http, start_edge, coordinator, api_key):
    iad = await start_edge("iad")
    await start_edge("lax")  # ord has never had a node: not a place to send work
    async with asyncio.timeout(5):
        while True:
            async with http.get(f"{iad.url}/api/v1/regions") as resp:
                states = {r["id"]: r["state"] for r in (await resp.json())["regions"]}
            if states["iad"] == states["lax"] == "up":
                break
            await asyncio.sleep(0.05)
    job = await submit(http, iad.url, api_key, {"url": "http://127.0.0.1:9/never", "retry_policy": {"max_reroutes": 5}})
    view = await wait_final(http, iad.url, api_key, job["job_id"])
    assert view["status"] == "failed" and view["error"] == "reroutes_exhausted"
    assert view["regions_tried"] == ["iad", "lax"]

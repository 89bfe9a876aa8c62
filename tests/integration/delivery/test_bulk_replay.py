"""Bulk replay of dead letters: a filter, a count, progress for large sets, and no second window within one."""

import asyncio
import time

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.edge import deliveries_api
from integration.delivery.helpers import all_in, closed_port, wait_webhooks
from support.jobs import auth, submit

pytestmark = pytest.mark.asyncio

SHORT_WINDOW = {"delivery_window_s": 0.3}


async def api(http, method, url, key, body=None):
    async with http.request(method, url, json=body, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def dead_jobs(http, edge, key, target, port, n):
    jobs = [
        await submit(
            http, edge.url, key, {"url": f"{target.url}/status/200", "body": str(i), "webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]}
        )
        for i in range(n)
    ]
    for job in jobs:
        await wait_webhooks(http, edge.url, key, job["job_id"], all_in("dead"))
    status, body = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead", key)
    assert status == 200
    return {e["job_id"]: e["dead_at_ms"] for e in body["dead"]}


async def replay(http, edge, key, body):
    return await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/replay", key, body)


async def test_bulk_replay_by_ids_and_by_time(http, edge, start_delivery, api_key, other_api_key, target, receivers):
    await start_delivery(**SHORT_WINDOW)
    port = closed_port()
    dead = await dead_jobs(http, edge, api_key, target, port, 3)
    theirs = await dead_jobs(http, edge, other_api_key, target, port, 1)
    first, *rest = sorted(dead, key=dead.get)

    receiver = await receivers(port=port)
    status, run = await replay(http, edge, api_key, {"job_ids": [first, *theirs, "job_1_0123456789abcdefp0"]})
    assert status == 200 and run["state"] == "done" and run["finished_at_ms"], run
    assert (run["matched"], run["jobs_done"], run["webhooks_replayed"]) == (1, 1, 1)  # another customer's id matches nothing
    await wait_webhooks(http, edge.url, api_key, first, all_in("delivered"))

    status, run = await replay(http, edge, api_key, {"dead_after": dead[first] - 1, "dead_before": max(dead.values()) + 1})
    assert status == 200 and (run["matched"], run["webhooks_replayed"]) == (2, 2), run  # first is no longer dead
    for job_id in rest:
        await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))
    assert sorted(r.json()["job_id"] for r in receiver.requests) == sorted(dead)  # globex's was not replayed
    status, progress = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead/replay/{run['replay_id']}", api_key)
    assert status == 200 and progress == run
    status, body = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead", other_api_key)
    assert [e["job_id"] for e in body["dead"]] == list(theirs)


async def test_large_sets_run_in_the_background_with_progress(http, edge, start_delivery, api_key, target, receivers, monkeypatch):
    monkeypatch.setattr(deliveries_api, "INLINE_MAX", 2)  # more than this many jobs: in the background
    await start_delivery(**SHORT_WINDOW)
    port = closed_port()
    dead = await dead_jobs(http, edge, api_key, target, port, 4)
    await receivers(port=port)
    status, run = await replay(http, edge, api_key, {})
    assert status == 202 and run["matched"] == 4 and run["state"] in ("running", "done"), run
    deadline = time.monotonic() + 15
    while True:
        status, progress = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead/replay/{run['replay_id']}", api_key)
        assert status == 200 and 0 <= progress["jobs_done"] <= 4
        if progress["state"] == "done":
            break
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.02)
    assert (progress["jobs_done"], progress["webhooks_replayed"]) == (4, 4)
    for job_id in dead:
        await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))


@pytest.mark.parametrize(
    "body, field",
    [
        ({"job_ids": []}, "job_ids"),
        ({"job_ids": "x"}, "job_ids"),
        ({"dead_after": -1}, "dead_after"),
        ({"dead_before": "1"}, "dead_before"),
        ({"status": "dead"}, "status"),
    ],
)
async def test_bad_filters_are_400(http, edge, api_key, body, field):
    status, answer = await replay(http, edge, api_key, body)
    assert status == 400 and answer["error"]["field"] == field, answer


async def test_a_replay_within_the_window_of_the_last_does_not_restart_it(
    http, start_edge, start_delivery, api_key, target, receivers, redis
):
    edge = await start_edge("iad", delivery_window_s=60)  # the edge's replays read the window too
    await start_delivery(delivery_window_s=60)
    receiver = await receivers(status=410)  # Gone: dead at once, whatever the window
    port = int(receiver.url.rsplit(":", 1)[1])
    [job_id] = await dead_jobs(http, edge, api_key, target, port, 1)
    hooks = keys.job_webhooks(job_id)

    status, run = await replay(http, edge, api_key, {"job_ids": [job_id]})
    assert status == 200 and run["webhooks_replayed"] == 1
    await wait_webhooks(http, edge.url, api_key, job_id, all_in("dead"))
    opened = int(await redis.hget(hooks, "0:replayed_ms"))
    assert int(await redis.hget(hooks, "0:since_ms")) == opened  # the first replay gave it a window

    status, run = await replay(http, edge, api_key, {"job_ids": [job_id]})  # again, within that window
    assert status == 200 and run["webhooks_replayed"] == 1
    await wait_webhooks(http, edge.url, api_key, job_id, all_in("dead"))
    assert int(await redis.hget(hooks, "0:since_ms")) == opened and int(await redis.hget(hooks, "0:replayed_ms")) == opened

    # The single-job route keeps the same rule.
    status, body = await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/{job_id}/replay", api_key)
    assert status == 200 and body["replayed"] == 1
    await wait_webhooks(http, edge.url, api_key, job_id, all_in("dead"))
    assert int(await redis.hget(hooks, "0:since_ms")) == opened

    # Once that window has passed, a replay opens a new one.
    await redis.hset(hooks, "0:replayed_ms", opened - 61_000)
    before = int(time.time() * 1000)
    status, run = await replay(http, edge, api_key, {"job_ids": [job_id]})
    assert status == 200 and run["webhooks_replayed"] == 1
    assert int(await redis.hget(hooks, "0:since_ms")) >= before and int(await redis.hget(hooks, "0:replayed_ms")) >= before


async def test_a_replay_whose_edge_stops_is_finished_by_another(http, start_edge, start_delivery, api_key, target, receivers, monkeypatch):
    """The replay is a bulk action (common/bulk.py): its state is in Redis, and another edge takes it over."""
    from ezthrottle_server.common import bulk_replay

    monkeypatch.setattr(deliveries_api, "INLINE_MAX", 1)  # in the background
    monkeypatch.setattr(bulk_replay, "PAGE", 1)  # one job a step
    first = await start_edge("iad", bulk_lease_s=0.5, **SHORT_WINDOW)
    second = await start_edge("iad", bulk_lease_s=0.5, **SHORT_WINDOW)
    real, steps = bulk_replay.step, {"first": 0}

    async def first_stalls_after_one(r, scripts, settings, action):
        if settings.node_id == first.settings.node_id:
            steps["first"] += 1
            if steps["first"] > 1:  # one job replayed, then this edge never gets through another step: it stops meanwhile
                await asyncio.Event().wait()
        return await real(r, scripts, settings, action)

    monkeypatch.setattr(bulk_replay, "step", first_stalls_after_one)
    await start_delivery(**SHORT_WINDOW)
    port = closed_port()
    dead = await dead_jobs(http, first, api_key, target, port, 4)
    await receivers(port=port)
    status, run = await replay(http, first, api_key, {})
    assert status == 202 and run["matched"] == 4, run
    async with asyncio.timeout(15):
        while steps["first"] < 2:  # one job replayed on the first edge, which now hangs in its next step
            await asyncio.sleep(0.01)
    await first.stop()
    deadline = time.monotonic() + 15
    while True:
        status, progress = await api(http, "GET", f"{second.url}/api/v1/deliveries/dead/replay/{run['replay_id']}", api_key)
        assert status == 200, progress
        if progress["state"] == "done":
            break
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.02)
    assert (progress["jobs_done"], progress["webhooks_replayed"]) == (4, 4), progress
    assert steps["first"] == 2  # the first edge replayed one job, the second the other three
    for job_id in dead:
        await wait_webhooks(http, second.url, api_key, job_id, all_in("delivered"))

"""Cancelling by a filter as a bulk action (common/bulk.py, common/bulk_cancel.py): in the background, with progress any
edge can read, taken over when its runner stops, its customer's alone, and capped per customer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

from ezthrottle_server.common import bulk, bulk_cancel, keys
from ezthrottle_server.common.bulk import BulkRunner
from ezthrottle_server.common.job_index import JobFilter
from ezthrottle_server.common.redisconn import Scripts
from integration.edge.test_cancel import HoldThenAnswer, pacing_held, queued_count
from support.jobs import auth, poll_view, submit, wait_final
from support.services import make_settings
from support.targets import serving

pytestmark = pytest.mark.asyncio

TOMORROW_MS = int(time.time() * 1000) + 86_400_000


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def submit_many(http: aiohttp.ClientSession, url: str, key: str, payloads: list[dict[str, Any]], width: int = 16) -> list[str]:
    """Submit every payload, ``width`` at a time; their job ids in order."""
    ids: list[str] = [""] * len(payloads)
    gate = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with gate:
            ids[i] = (await submit(http, url, key, payloads[i]))["job_id"]

    await asyncio.gather(*(one(i) for i in range(len(payloads))))
    return ids


async def test_2500_jobs_behind_a_held_domain_are_cancelled_in_the_background_and_none_is_sent(http, edge, redis, api_key):
    async with serving(HoldThenAnswer()) as server:
        slow = [(await submit(http, edge.url, api_key, {"url": f"{server.url}/hold?i={i}"}))["job_id"] for i in range(2)]
        await server.wait_for(2, path="/hold")  # the domain's two send slots are held: everything after waits
        n = 2500
        ids = await submit_many(
            http, edge.url, api_key, [{"url": f"{server.url}/echo?n={i}", "metadata": {"batch": "big"}} for i in range(n)]
        )
        assert await queued_count(redis) == n + 2

        started = time.perf_counter()
        status, action = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", api_key, {"filter": {"metadata.batch": "big"}})
        answered_s = time.perf_counter() - started
        assert status == 202, action
        assert action["state"] == "running" and action["action_id"].startswith("cnl_")
        assert (action["matched"], action["matched_exact"]) == (n, True)
        seen: list[dict[str, Any]] = []

        async def read() -> dict[str, Any]:
            status, progress = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{action['action_id']}", api_key)
            assert status == 200, progress
            seen.append(progress)
            return progress

        done = await poll_view(read, lambda p: p["state"] != "running", lambda p: f"still running: {p}", 60, 0.05)
        took_s = time.perf_counter() - started
        assert done["state"] == "done" and done["finished_at_ms"] >= done["created_at_ms"], done
        assert (done["matched"], done["cancelled"], done["skipped_final"], done["in_flight"], done["not_found"]) == (n, n, 0, 0, 0)
        cancelled = [p["cancelled"] for p in seen]
        assert cancelled == sorted(cancelled) and all(0 <= c <= n for c in cancelled)  # readable as it went, never backwards
        print(f"bulk cancel of {n}: POST answered in {answered_s * 1000:.0f} ms, done in {took_s:.2f} s, {len(seen)} progress reads")
        assert await queued_count(redis) == 2

        server.hold.set()  # the domain frees up: its queue is granted and every cancelled job skipped
        for job_id in slow:
            assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=10))["status"] == "success"
        await poll_view(lambda: pacing_held(redis), lambda held: held == 0, lambda held: f"{held} jobs still held by pacing", 30, 0.05)
        assert server.matching("/echo") == []
        states = set()
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(job_id), "state")
            states = set(await pipe.execute())
        assert states == {"cancelled"}


class _Dies(BulkRunner):
    """A runner whose process dies: it cancels a second page but never records it, and lets no lease go."""

    async def _let_go(self, action: bulk.Action, ended: bool) -> None:
        return None


async def test_an_action_whose_runner_died_is_taken_over_and_counted_once(http, start_edge, redis, redis_url, api_key):
    edge = await start_edge("iad", bulk_lease_s=0.5)
    n = 450  # three pages of bulk_cancel.PAGE
    ids = await submit_many(http, edge.url, api_key, [{"url": f"https://api.example/{i}", "retry_at": TOMORROW_MS} for i in range(n)])
    settings = make_settings("edge", redis_url, "iad", bulk_lease_s=0.5)
    created = bulk.now_ms()
    params = bulk_cancel.params(JobFilter(domain="api.example:443"), False, created)
    action = await bulk.create(redis, settings, "acme", bulk_cancel.KIND, bulk_cancel.ID_PREFIX, params, matched=n, matched_exact=True)
    stuck = asyncio.Event()
    calls = 0

    async def step(r: Any, scripts: Scripts, s: Any, a: bulk.Action) -> bulk.StepResult:
        nonlocal calls
        calls += 1
        result = await bulk_cancel.step(r, scripts, s, a)
        if calls == 2:  # the page is cancelled, and the process dies before it records it
            stuck.set()
            await asyncio.Event().wait()
        return result

    dying = _Dies(redis, Scripts(redis), settings, "dying", steps={bulk_cancel.KIND: step})
    task = asyncio.create_task(dying.run(action))
    await asyncio.wait_for(stuck.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = await bulk.read(redis, "acme", action.action_id)
    assert record is not None and record["state"] == "running" and bulk.counters(record)["cancelled"] == bulk_cancel.PAGE

    # The edge's sweep (or a read of the progress) takes it over once the dead runner's lease lapses, from its cursor.
    async def read() -> dict[str, Any]:
        status, progress = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{action.action_id}", api_key)
        assert status == 200, progress
        return progress

    done = await poll_view(read, lambda p: p["state"] == "done", lambda p: f"not taken over: {p}", 30, 0.05)
    assert (done["matched"], done["cancelled"], done["skipped_final"]) == (n, n, 0), done  # the unrecorded page counted once
    assert int((await bulk.read(redis, "acme", action.action_id) or {})["runs"]) == 2
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        assert set(await pipe.execute()) == {"cancelled"}
    assert await queued_count(redis) == 0


async def test_an_edge_that_stops_hands_its_action_to_another(http, start_edge, redis, api_key, monkeypatch):
    first = await start_edge("iad", bulk_lease_s=0.5)
    second = await start_edge("iad", bulk_lease_s=0.5)
    gate = asyncio.Event()
    real = bulk_cancel.step

    async def slow_on_first(r: Any, scripts: Scripts, s: Any, a: bulk.Action) -> bulk.StepResult:
        if s.node_id == first.settings.node_id:
            await gate.wait()  # the first edge never gets through a page: it stops meanwhile
        return await real(r, scripts, s, a)

    monkeypatch.setattr(bulk_cancel, "step", slow_on_first)
    n = 150
    await submit_many(http, first.url, api_key, [{"url": f"https://api.example/{i}", "retry_at": TOMORROW_MS} for i in range(n)])
    status, action = await call(http, "POST", f"{first.url}/api/v1/jobs/cancel", api_key, {"filter": {"status": "scheduled"}})
    assert status == 202 and action["matched"] == n, action
    await first.stop()  # its runner lets the lease go: the second edge's sweep goes on with it

    async def read() -> dict[str, Any]:
        return (await call(http, "GET", f"{second.url}/api/v1/jobs/cancel/{action['action_id']}", api_key))[1]

    done = await poll_view(read, lambda p: p["state"] == "done", lambda p: f"not taken over: {p}", 30, 0.05)
    assert (done["matched"], done["cancelled"]) == (n, n), done


async def test_another_customer_cannot_read_it_and_the_cap_is_a_429(http, start_edge, redis, redis_url, api_key, other_api_key):
    edge = await start_edge("iad", bulk_max_running_per_customer=1, bulk_lease_s=60)
    await submit_many(http, edge.url, api_key, [{"url": f"https://api.example/{i}", "retry_at": TOMORROW_MS} for i in range(3)])
    settings = make_settings("edge", redis_url, "iad", bulk_max_running_per_customer=1, bulk_lease_s=60)
    params = bulk_cancel.params(JobFilter(), False, bulk.now_ms())
    running = await bulk.create(redis, settings, "acme", bulk_cancel.KIND, bulk_cancel.ID_PREFIX, params, matched=0, matched_exact=False)
    await redis.set(keys.bulk_lease("acme", running.action_id), "elsewhere", px=60_000)  # another edge runs it

    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", api_key, {"filter": {}})
    assert status == 429 and body["error"]["code"] == "too_many_bulk_actions", body
    status, body = await call(http, "POST", f"{edge.url}/api/v1/deliveries/dead/replay", api_key, {})
    assert status == 429 and body["error"]["code"] == "too_many_bulk_actions", body
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", other_api_key, {"filter": {}})
    assert status == 200 and body["state"] == "done", body  # the cap is per customer

    status, mine = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{running.action_id}", api_key)
    assert status == 200 and mine["state"] == "running"
    for action_id in (running.action_id, "cnl_" + "0" * 24, "cnl_x", "rpl_" + running.action_id[4:]):
        status, theirs = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{action_id}", other_api_key)
        assert status == 404 and theirs["error"]["code"] == "not_found", (action_id, theirs)

    await redis.hset(keys.bulk_action("acme", running.action_id), "state", "done")  # it ended: the slot is free again
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", api_key, {"filter": {}})
    assert status == 200 and body["cancelled"] == 3, body


async def test_bad_filters_and_ids_are_400(http, edge, api_key):
    for body, field in (
        ({"filter": {"status": "nope"}}, "filter.status"),
        ({"filter": 3}, "filter"),
        ({"filter": {"cursor": "x"}}, "filter.cursor"),
    ):
        status, answer = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", api_key, body)
        assert status == 400 and answer["error"]["field"] == field, (body, answer)


async def test_the_sdk_starts_a_bulk_cancel_and_waits_for_it(http, edge, api_key, monkeypatch):
    from ezthrottle import AsyncEZThrottle, EZThrottle, NotFoundError
    from ezthrottle_server.edge import cancel_api

    monkeypatch.setattr(cancel_api, "INLINE_MAX", 2)  # more than this: in the background
    ids = await submit_many(
        http, edge.url, api_key, [{"url": f"https://api.example/{i}", "retry_at": TOMORROW_MS, "metadata": {"b": i % 2}} for i in range(6)]
    )
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        action = await client.cancel_matching(metadata={"b": 1}, domain="api.example")
        assert action["matched"] == 3 and action["state"] in ("running", "done"), action
        done = await client.wait_cancel(action["action_id"], timeout_s=30, poll_interval_s=0.05)
        assert (done["state"], done["cancelled"]) == ("done", 3)
        assert (await client.get_cancel_progress(action["action_id"]))["cancelled"] == 3
        with pytest.raises(NotFoundError):
            await client.get_cancel_progress("cnl_" + "0" * 24)
        assert [j["status"] for j in [await client.get_job(i) for i in ids[1::2]]] == ["cancelled"] * 3
        assert [j["status"] for j in [await client.get_job(i) for i in ids[0::2]]] == ["scheduled"] * 3

    def sync_part() -> dict[str, Any]:
        with EZThrottle(api_key, base_url=edge.url) as client:
            started = client.cancel_matching(status="scheduled")
            return client.wait_cancel(started["action_id"], timeout_s=30, poll_interval_s=0.05)

    done = await asyncio.to_thread(sync_part)
    assert (done["state"], done["matched"], done["cancelled"]) == ("done", 3, 3)


async def test_the_admin_cli_cancels_a_customers_jobs_by_filter_showing_progress(http, edge, redis_url, api_key, other_api_key):
    async def admin(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, *args]
        return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)

    mine = await submit_many(
        http, edge.url, api_key, [{"url": f"https://api.example/{i}", "retry_at": TOMORROW_MS, "metadata": {"o": "x"}} for i in range(250)]
    )
    theirs = await submit(http, edge.url, other_api_key, {"url": "https://api.example/t", "retry_at": TOMORROW_MS, "metadata": {"o": "x"}})
    done = await admin("jobs", "cancel", "--customer", "acme", "--metadata", "o=x", "--domain", "api.example")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].split()[1:4] == ["state=done", "matched=250", "cancelled=250"], lines
    again = await admin("--json", "jobs", "cancel", "--customer", "acme", "--status", "scheduled,queued")
    assert again.returncode == 0 and orjson.loads(again.stdout.strip().splitlines()[-1])["matched"] == 0, again.stdout
    bad = await admin("jobs", "cancel", "--customer", "acme", "--status", "nope")
    assert bad.returncode == 1 and "status" in bad.stderr
    assert (await admin("jobs", "cancel")).returncode == 1  # neither a job nor a customer
    assert (await call(http, "GET", f"{edge.url}/api/v1/jobs/{mine[-1]}", api_key))[1]["status"] == "cancelled"
    assert (await call(http, "GET", f"{edge.url}/api/v1/jobs/{theirs['job_id']}", other_api_key))[1]["status"] == "scheduled"

"""Cancelling jobs: ``DELETE /api/v1/jobs/{id}`` and ``POST /api/v1/jobs/cancel``.

Real edges, a real coordinator and delivery worker, a real target on
loopback: what matters is that nothing reaches the target after the cancel
answers, whatever held the job (a domain's queue, the delayed set, another
region), and that each job is counted off its customer's admission counter
once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.scope import SHARED
from integration.edge.job_control import FINAL, now_ms, queued_count
from support.jobs import auth, get_job, poll_view, submit, wait_final
from support.services import RunningApp
from support.targets import _Server, serving

pytestmark = pytest.mark.asyncio


async def cancel(http: aiohttp.ClientSession, edge: RunningApp, key: str, job_id: str, query: str = "") -> tuple[int, dict[str, Any]]:
    async with http.delete(f"{edge.url}/api/v1/jobs/{job_id}{query}", headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def bulk(http: aiohttp.ClientSession, edge: RunningApp, key: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{edge.url}/api/v1/jobs/cancel", json=body, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def pacing_held(redis: Any) -> int:
    """Jobs waiting in, or granted from, any domain's pacing queue (every region)."""
    total = 0
    async for key in redis.scan_iter(match="ezt:{ezt:d:*}:wait:*"):
        total += await redis.zcard(key)
    async for key in redis.scan_iter(match="ezt:{ezt:d:*}:run:*"):
        total += await redis.zcard(key)
    return total


async def test_a_delayed_job_is_cancelled_and_never_sent(http, edge, coordinator, redis, api_key, target):
    due = now_ms() + 700
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=cancelled", "retry_at": due})
    sentinel = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=sentinel", "retry_at": due})
    assert await queued_count(redis) == 2

    status, body = await cancel(http, edge, api_key, job["job_id"])
    assert status == 200, body
    assert body == {"job_id": job["job_id"], "status": "cancelled", "children_cancelled": 0, "children_cancel_requested": 0}
    p = keys.job_partition(job["job_id"])
    assert not [m for m in await redis.zrange(keys.delayed(p), 0, -1) if m.endswith(job["job_id"])]
    assert await queued_count(redis) == 1  # counted off once

    await wait_final(http, edge.url, api_key, sentinel["job_id"], timeout_s=10, states=FINAL)  # released after the due time
    assert [r.query.get("n") for r in target.matching("/echo")] == ["sentinel"]
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "cancelled" and view["error"] == "cancelled" and view["finished_at_ms"] and view["attempts"] == []

    # Cancelled again: final, and the counter is not touched twice.
    status, body = await cancel(http, edge, api_key, job["job_id"])
    assert status == 409 and body["error"]["code"] == "already_final"
    assert await queued_count(redis) == 0


async def test_a_hundred_jobs_queued_behind_a_slow_domain_are_all_cancelled_and_none_is_sent(http, edge, redis, api_key):
    async with serving(HoldThenAnswer()) as server:
        # the domain's two send slots (the default limit) are held until the test lets them go
        slow = [(await submit(http, edge.url, api_key, {"url": f"{server.url}/hold?i={i}"}))["job_id"] for i in range(2)]
        await server.wait_for(2, path="/hold")
        ids = [(await submit(http, edge.url, api_key, {"url": f"{server.url}/echo?n={i}"}))["job_id"] for i in range(100)]
        assert await queued_count(redis) == 102

        status, body = await bulk(http, edge, api_key, {"job_ids": ids})
        assert status == 200, body
        assert body["counts"] == {"cancelled": 100, "cancel_requested": 0, "in_flight": 0, "already_final": 0, "not_found": 0}
        assert set(body["jobs"].values()) == {"cancelled"}
        assert await queued_count(redis) == 2

        server.hold.set()  # the domain frees up; the queue is granted and every cancelled job skipped
        for job_id in slow:
            assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=10))["status"] == "success"
        await poll_view(lambda: pacing_held(redis), lambda held: held == 0, lambda held: f"{held} jobs still held by pacing", 10, 0.05)
        # a skipped send takes no place in the domain's window: the sends after it need not wait for it
        window = await redis.zrange(keys.pacing_sent(domain_of(server.url), SHARED), 0, -1)
        assert {lease.rpartition("@")[0] for lease in window} <= set(slow), window
        after = await submit(http, edge.url, api_key, {"url": f"{server.url}/echo?n=after"})  # the domain sends again
        await wait_final(http, edge.url, api_key, after["job_id"], timeout_s=10)
        assert [r.query.get("n") for r in server.matching("/echo")] == ["after"]
        last = await get_job(http, edge.url, api_key, ids[-1])  # the hundredth
        assert last["status"] == "cancelled" and last["attempts"] == [] and last["started_at_ms"] is None
        assert await queued_count(redis) == 0


async def test_raced_copies_in_every_region_stop(http, start_edge, coordinator, redis, api_key, target):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    due = now_ms() + 600
    job = await submit(http, iad.url, api_key, {"url": f"{target.url}/echo?n=raced", "regions": ["iad", "lax"], "retry_at": due})
    sentinel = await submit(http, lax.url, api_key, {"url": f"{target.url}/echo?n=sentinel", "regions": ["iad", "lax"], "retry_at": due})
    status, _ = await cancel(http, lax, api_key, job["job_id"])
    assert status == 200
    p = keys.job_partition(job["job_id"])
    assert not [m for m in await redis.zrange(keys.delayed(p), 0, -1) if m.endswith(job["job_id"])]
    await wait_final(http, iad.url, api_key, sentinel["job_id"], timeout_s=10)
    await target.wait_for(1, path="/echo")
    assert {r.query.get("n") for r in target.matching("/echo")} == {"sentinel"}


class SlowUnavailable(_Server):
    """Answers 503 once released: an attempt stays in flight until then, and a retry would follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.app.router.add_get("/slow", self._slow)

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.release.wait()
        return web.Response(status=503, text="busy, try again")


async def test_an_attempt_in_flight_answers_409_or_is_cancelled_once_it_ends(http, edge, redis, api_key):
    async with serving(SlowUnavailable()) as server:
        job = await submit(http, edge.url, api_key, {"url": f"{server.url}/slow", "retry_policy": {"max_retries": 3}})
        await server.wait_for(1)

        status, body = await cancel(http, edge, api_key, job["job_id"])
        assert status == 409 and body["error"]["code"] == "in_flight", body
        status, body = await cancel(http, edge, api_key, job["job_id"], "?after_attempt=true")
        assert status == 202 and body["status"] == "cancel_requested", body
        assert (await get_job(http, edge.url, api_key, job["job_id"]))["cancel_requested"] is True

        server.release.set()
        view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10, states=FINAL)
        assert view["status"] == "cancelled"
        assert view["result"]["status_code"] == 503 and view["result"]["body"] == "busy, try again"  # that attempt's result, kept
        assert [a["status_code"] for a in view["attempts"]] == [503]
        assert len(server.requests) == 1  # no retry
        assert await queued_count(redis) == 0


async def test_a_successful_attempt_in_flight_stands_after_a_cancel_request(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/400"})
    await target.wait_for(1, path="/delay/400")
    status, body = await cancel(http, edge, api_key, job["job_id"], "?after_attempt=true")
    assert status == 202, body
    view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10, states=FINAL)
    assert view["status"] == "success"  # that success happened: it is not reported as cancelled


async def test_a_final_job_is_409_and_another_customers_job_is_404(http, edge, api_key, other_api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo"})
    await wait_final(http, edge.url, api_key, job["job_id"])
    status, body = await cancel(http, edge, api_key, job["job_id"])
    assert status == 409 and body["error"]["code"] == "already_final"

    waiting = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=waiting", "retry_at": now_ms() + 60_000})
    status, body = await cancel(http, edge, other_api_key, waiting["job_id"])
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await cancel(http, edge, api_key, "job_1700000000000_0123456789abcdefp0")
    assert status == 404
    status, body = await cancel(http, edge, api_key, "not-a-job")
    assert status == 404
    assert (await get_job(http, edge.url, api_key, waiting["job_id"]))["status"] == "scheduled"  # untouched by globex


async def test_cancelling_a_workflows_root_cancels_its_pending_children_and_timers(http, edge, coordinator, redis, api_key, target):
    # A root that fails at once; its on_failure child waits (retry_at), so it is pending when the root is cancelled.
    root = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/status/400",
            "on_failure": {"url": f"{target.url}/echo?n=child", "retry_at": now_ms() + 60_000},
        },
    )
    view = await poll_view(
        lambda: get_job(http, edge.url, api_key, root["job_id"]),
        lambda v: bool(v.get("workflow", {}).get("children")),
        lambda v: f"no child: {v}",
        10,
        0.03,
    )
    child_id = view["workflow"]["children"][0]["job_id"]
    status, body = await cancel(http, edge, api_key, root["job_id"])
    assert status == 200 and body["status"] == "already_final" and body["children_cancelled"] == 1, body
    child = await get_job(http, edge.url, api_key, child_id)
    assert child["status"] == "cancelled"
    p = keys.job_partition(child_id)
    assert not [m for m in await redis.zrange(keys.delayed(p), 0, -1) if m.endswith(child_id)]

    # A root still waiting, with a failure timer: the timer goes, and its on_failure never starts.
    waiting = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo?n=root",
            "retry_at": now_ms() + 60_000,
            "on_failure_timeout_ms": 200,
            "on_failure": {"url": f"{target.url}/echo?n=timer-child"},
        },
    )
    p = keys.job_partition(waiting["job_id"])
    assert await redis.zscore(keys.workflow_timers(p), f"failure_timeout|{waiting['job_id']}") is not None
    status, body = await cancel(http, edge, api_key, waiting["job_id"])
    assert status == 200 and body["status"] == "cancelled"
    assert await redis.zscore(keys.workflow_timers(p), f"failure_timeout|{waiting['job_id']}") is None
    view = await get_job(http, edge.url, api_key, waiting["job_id"])
    assert view["workflow"]["continuation"] == "cancelled" and view["workflow"]["children"] == []
    # A later sibling whose own failure timer fires shows the coordinator passed that moment.
    probe = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo?n=probe",
            "retry_at": now_ms() + 60_000,
            "on_failure_timeout_ms": 300,
            "on_failure": {"url": f"{target.url}/echo?n=probe-child"},
        },
    )
    await target.wait_for(1, path="/echo", timeout_s=10)
    await poll_view(
        lambda: get_job(http, edge.url, api_key, probe["job_id"]),
        lambda v: bool(v["workflow"]["children"]),
        lambda v: f"probe's timer never fired: {v}",
        10,
        0.03,
    )
    assert {r.query.get("n") for r in target.matching("/echo")} == {"probe-child"}
    assert (await get_job(http, edge.url, api_key, waiting["job_id"]))["workflow"]["children"] == []


async def test_webhooks_report_the_cancellation(http, edge, delivery, api_key, receiver, target):
    job = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/echo",
            "retry_at": now_ms() + 60_000,
            "webhooks": [{"url": f"{receiver.url}/hook"}],
            "metadata": {"order": 7},
        },
    )
    status, _ = await cancel(http, edge, api_key, job["job_id"])
    assert status == 200
    (hook,) = await receiver.wait_for(1, timeout_s=10)
    payload = hook.json()
    assert payload["job_id"] == job["job_id"] and payload["status"] == "cancelled"
    assert payload["status"] != "success"  # the published SDK's handlers test status == "success"
    assert payload["response"]["status_code"] is None and payload["metadata"] == {"order": 7}
    assert payload["error"] == "cancelled"
    assert target.requests == []


async def test_bulk_cancel_answers_a_count_per_outcome(http, edge, api_key, other_api_key, target):
    waiting = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?a", "retry_at": now_ms() + 60_000})
    done = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?b"})
    await wait_final(http, edge.url, api_key, done["job_id"])
    theirs = await submit(http, edge.url, other_api_key, {"url": f"{target.url}/echo?c", "retry_at": now_ms() + 60_000})
    ids = [waiting["job_id"], done["job_id"], theirs["job_id"], "nope", waiting["job_id"]]
    status, body = await bulk(http, edge, api_key, {"job_ids": ids})
    assert status == 200, body
    assert body["counts"] == {"cancelled": 1, "cancel_requested": 0, "in_flight": 0, "already_final": 1, "not_found": 2}
    assert body["jobs"] == {
        waiting["job_id"]: "cancelled",
        done["job_id"]: "already_final",
        theirs["job_id"]: "not_found",
        "nope": "not_found",
    }
    assert (await get_job(http, edge.url, other_api_key, theirs["job_id"]))["status"] == "scheduled"

    for bad, field in (
        ({"job_ids": ["x"] * 1001}, "job_ids"),
        ({"job_ids": "x"}, "job_ids"),
        ({}, "job_ids"),
        ({"job_ids": [], "all": 1}, "all"),
    ):
        status, body = await bulk(http, edge, api_key, bad)
        assert status == 400 and body["error"]["field"] == field, body


async def test_the_sdk_cancels_and_waits_for_the_cancelled_status(edge, api_key, target):
    from ezthrottle import AsyncEZThrottle, EZThrottleError, NotFoundError, Step

    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        job = await Step(client).url(f"{target.url}/echo?n=sdk").retry_at(now_ms() + 60_000).execute_async()
        answer = await client.cancel_job(job["job_id"])
        assert answer["status"] == "cancelled"
        with pytest.raises(EZThrottleError) as err:
            await client.cancel_job(job["job_id"])
        assert err.value.code == "already_final" and err.value.status_code == 409
        assert (await client.wait(job["job_id"], timeout_s=5))["status"] == "cancelled"
        with pytest.raises(NotFoundError):
            await client.cancel_job("job_1700000000000_0123456789abcdefp0")
        assert (await client.cancel_jobs([job["job_id"], "nope"]))["counts"]["not_found"] == 1
    assert target.matching("/echo") == []


async def test_the_admin_cli_cancels_any_customers_job(http, edge, redis_url, api_key, target):
    async def admin(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, *args]
        return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30)

    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=cli", "retry_at": now_ms() + 60_000})
    done = await admin("--json", "jobs", "cancel", job["job_id"])
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "job_id": job["job_id"], "customer": "acme", "status": "cancelled", "children_cancelled": 0, "children_cancel_requested": 0,
    }  # fmt: skip
    assert (await get_job(http, edge.url, api_key, job["job_id"]))["status"] == "cancelled"
    again = await admin("jobs", "cancel", job["job_id"])
    assert again.returncode == 2 and "status=already_final" in again.stdout
    unknown = await admin("jobs", "cancel", "job_1700000000000_0123456789abcdefp0")
    assert unknown.returncode == 1


async def test_bulk_cancel_by_the_job_lists_filters(http, edge, api_key, other_api_key, target):
    later = now_ms() + 60_000
    batch = [
        (await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?b1={i}", "retry_at": later, "metadata": {"batch": "b1"}}))[
            "job_id"
        ]
        for i in range(3)
    ]
    other = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?b2", "retry_at": later, "metadata": {"batch": "b2"}})
    done = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?b1=done", "metadata": {"batch": "b1"}})
    await wait_final(http, edge.url, api_key, done["job_id"])
    theirs = await submit(
        http, edge.url, other_api_key, {"url": f"{target.url}/echo?b1=theirs", "retry_at": later, "metadata": {"batch": "b1"}}
    )

    status, body = await bulk(http, edge, api_key, {"filter": {"metadata.batch": "b1"}})
    assert status == 200, body
    assert body["counts"]["cancelled"] == 3 and sum(body["counts"].values()) == 3, body  # the final one is not matched
    assert set(body["jobs"]) == set(batch) and body["more"] is False
    for job_id in batch:
        assert (await get_job(http, edge.url, api_key, job_id))["status"] == "cancelled"
    assert (await get_job(http, edge.url, api_key, other["job_id"]))["status"] == "scheduled"
    assert (await get_job(http, edge.url, other_api_key, theirs["job_id"]))["status"] == "scheduled"  # globex's

    # status, domain: as GET /api/v1/jobs reads them; the final job is matched when asked for, and already final
    status, body = await bulk(http, edge, api_key, {"filter": {"status": ["success", "scheduled"], "metadata.batch": "b1"}})
    assert status == 200 and body["jobs"] == {done["job_id"]: "already_final"}, body

    for bad, field in (
        ({"filter": {"status": "nope"}}, "filter.status"),
        ({"filter": {"colour": "red"}}, "filter.colour"),
        ({"filter": {"limit": 3}}, "filter.limit"),
        ({"filter": "status=queued"}, "filter"),
        ({"filter": {}, "job_ids": []}, "filter"),
    ):
        status, body = await bulk(http, edge, api_key, bad)
        assert status == 400 and body["error"]["field"] == field, (bad, body)
    assert [r.query for r in target.matching("/echo")] == [{"b1": "done"}]  # only the job that ran before


class HoldThenAnswer(_Server):
    """``/hold`` answers 200 and ``/slow`` 503, each once its event is set (attempts stay in flight till then); ``/echo`` 200 at once."""

    def __init__(self) -> None:
        super().__init__()
        self.hold, self.slow = asyncio.Event(), asyncio.Event()
        self.app.router.add_get("/hold", self._hold)
        self.app.router.add_get("/slow", self._slow)
        self.app.router.add_get("/echo", self._echo)

    async def _echo(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="ok")

    async def _hold(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.hold.wait()
        return web.Response(text="ok")

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.slow.wait()
        return web.Response(status=503, text="busy")


async def test_a_cancel_requested_while_one_region_sends_stops_the_raced_copy_in_another(http, start_edge, redis, api_key):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    async with serving(HoldThenAnswer()) as server:
        # lax's two send slots for the domain are held; the raced job goes out from iad and waits in lax's queue
        held = [(await submit(http, lax.url, api_key, {"url": f"{server.url}/hold?i={i}", "regions": ["lax"]}))["job_id"] for i in range(2)]
        await server.wait_for(2, path="/hold")
        job = await submit(
            http, iad.url, api_key, {"url": f"{server.url}/slow", "regions": ["iad", "lax"], "retry_policy": {"max_retries": 3}}
        )
        await server.wait_for(1, path="/slow")
        status, body = await cancel(http, iad, api_key, job["job_id"], "?after_attempt=true")
        assert status == 202 and body["status"] == "cancel_requested", body

        server.hold.set()  # lax grants its copy now: it must not be sent while iad's attempt runs
        for job_id in held:
            await wait_final(http, lax.url, api_key, job_id, timeout_s=10)
        await poll_view(lambda: pacing_held(redis), lambda n: n <= 1, lambda n: f"{n} still held by pacing", 10, 0.05)  # iad's send only
        assert len(server.matching("/slow")) == 1
        assert (await get_job(http, iad.url, api_key, job["job_id"]))["status"] not in FINAL

        server.slow.set()
        view = await wait_final(http, iad.url, api_key, job["job_id"], timeout_s=10, states=FINAL)
        assert view["status"] == "cancelled" and view["result"]["status_code"] == 503
        assert len(server.matching("/slow")) == 1

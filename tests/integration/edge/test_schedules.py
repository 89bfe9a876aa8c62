"""Schedules: validated at the door, tenant-scoped, each tick fired once as an ordinary job."""

import asyncio
import itertools
import time

import pytest
from prometheus_client import REGISTRY

from ezthrottle_server.common import keys
from ezthrottle_server.common.quotas import Tier
from support.jobs import auth, get_job, wait_final

pytestmark = pytest.mark.asyncio


def ticks(outcome):
    """ezt_schedule_ticks_total{outcome} of this process (the coordinators run in it)."""
    return REGISTRY.get_sample_value("ezt_schedule_ticks_total", {"outcome": outcome}) or 0.0


async def call(http, method, url, key, payload=None):
    async with http.request(method, url, json=payload, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def create(http, edge, key, **body):
    status, view = await call(http, "POST", f"{edge.url}/api/v1/schedules", key, body)
    assert status == 201, view
    return view


async def schedule(http, edge, key, schedule_id):
    status, view = await call(http, "GET", f"{edge.url}/api/v1/schedules/{schedule_id}", key)
    assert status == 200, view
    return view


async def wait_schedule(http, edge, key, schedule_id, done, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while True:
        view = await schedule(http, edge, key, schedule_id)
        if done(view):
            return view
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)


async def fired_jobs(redis, schedule_id):
    """Every job record the schedule fired: (tick ms, job id), by tick."""
    out = []
    async for key in redis.scan_iter(match=keys.JOB_KEY_PATTERN, count=1000):
        job_id = key.rpartition(":job:")[2]
        if keys.job_partition(job_id) is None:
            continue
        if await redis.hget(key, "schedule") == schedule_id:
            idem = await redis.hget(key, "idempotent_key")
            out.append((int(idem.rsplit(":", 1)[1]), job_id))
    return sorted(out)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"cron": "not a cron", "job": {"url": "http://127.0.0.1:9/x"}}, "cron"),
        ({"cron": "* * * * * *", "job": {"url": "http://127.0.0.1:9/x"}}, "cron"),
        ({"cron": "0 0 30 2 *", "job": {"url": "http://127.0.0.1:9/x"}}, "cron"),
        ({"cron": "*/5 * * * *", "timezone": "Mars/Olympus", "job": {"url": "http://127.0.0.1:9/x"}}, "timezone"),
        ({"every_s": 0, "job": {"url": "http://127.0.0.1:9/x"}}, "every_s"),
        ({"every_s": 1.5, "job": {"url": "http://127.0.0.1:9/x"}}, "every_s"),
        ({"every_s": 5, "cron": "* * * * *", "job": {"url": "http://127.0.0.1:9/x"}}, "every_s"),
        ({"every_s": 5, "overlap": "queue", "job": {"url": "http://127.0.0.1:9/x"}}, "overlap"),
        ({"job": {"url": "http://127.0.0.1:9/x"}}, "cron"),
        ({"every_s": 5}, "job"),
        ({"every_s": 5, "job": {"method": "GET"}}, "job.url"),
        ({"every_s": 5, "job": {"url": "http://127.0.0.1:9/x", "retries": 3}}, "job.retries"),
        ({"every_s": 5, "job": {"url": "http://127.0.0.1:9/x", "idempotent_key": "k"}}, "job.idempotent_key"),
        ({"every_s": 5, "job": {"url": "http://127.0.0.1:9/x"}, "when": "now"}, "when"),
    ],
)
async def test_bad_schedules_are_400_naming_the_field(http, edge, api_key, body, field):
    status, answer = await call(http, "POST", f"{edge.url}/api/v1/schedules", api_key, body)
    assert status == 400, answer
    assert answer["error"]["field"] == field, answer


async def test_outbound_policy_and_the_per_customer_ceiling(http, start_edge, api_key, target):
    edge = await start_edge("iad", schedules_max_per_customer=2)
    status, answer = await call(
        http, "POST", f"{edge.url}/api/v1/schedules", api_key, {"every_s": 5, "job": {"url": "http://169.254.169.254/latest"}}
    )
    assert status == 422 and answer["error"]["field"] == "job.url", answer
    for _ in range(2):
        await create(http, edge, api_key, every_s=60, job={"url": f"{target.url}/echo"})
    status, answer = await call(
        http, "POST", f"{edge.url}/api/v1/schedules", api_key, {"every_s": 60, "job": {"url": f"{target.url}/echo"}}
    )
    assert status == 400 and "2 schedules" in answer["error"]["message"], answer


async def test_crud_and_tenancy(http, edge, api_key, other_api_key, target):
    before = int(time.time() * 1000)
    view = await create(http, edge, api_key, cron="*/5 * * * *", timezone="Europe/Paris", job={"url": f"{target.url}/echo"})
    sid = view["schedule_id"]
    assert view["cron"] == "*/5 * * * *" and view["every_s"] is None and view["overlap"] == "skip" and not view["paused"]
    assert before < view["next_fire_at_ms"] <= before + 5 * 60_000 and view["next_fire_at_ms"] % 300_000 == 0
    assert view["job"]["url"] == f"{target.url}/echo"
    mine = await create(http, edge, other_api_key, every_s=30, job={"url": f"{target.url}/echo"})

    status, listed = await call(http, "GET", f"{edge.url}/api/v1/schedules", api_key)
    assert status == 200 and [s["schedule_id"] for s in listed["schedules"]] == [sid]
    for method, payload in (("GET", None), ("PATCH", {"paused": True}), ("DELETE", None)):
        status, answer = await call(http, method, f"{edge.url}/api/v1/schedules/{sid}", other_api_key, payload)
        assert status == 404 and answer["error"]["code"] == "not_found", (method, answer)
    status, _ = await call(http, "GET", f"{edge.url}/api/v1/schedules/{mine['schedule_id']}", api_key)
    assert status == 404

    status, paused = await call(http, "PATCH", f"{edge.url}/api/v1/schedules/{sid}", api_key, {"paused": True})
    assert status == 200 and paused["paused"] and paused["next_fire_at_ms"] is None
    status, changed = await call(
        http, "PATCH", f"{edge.url}/api/v1/schedules/{sid}", api_key, {"paused": False, "every_s": 7, "overlap": "allow"}
    )
    assert status == 200 and not changed["paused"] and changed["every_s"] == 7 and changed["cron"] is None and changed["overlap"] == "allow"
    assert changed["next_fire_at_ms"] > before
    status, answer = await call(http, "PATCH", f"{edge.url}/api/v1/schedules/{sid}", api_key, {"timezone": "Nowhere/Land"})
    assert status == 400 and answer["error"]["field"] == "timezone"

    status, answer = await call(http, "DELETE", f"{edge.url}/api/v1/schedules/{sid}", api_key)
    assert status == 200 and answer == {"schedule_id": sid, "deleted": True}
    status, _ = await call(http, "GET", f"{edge.url}/api/v1/schedules/{sid}", api_key)
    assert status == 404
    status, listed = await call(http, "GET", f"{edge.url}/api/v1/schedules", other_api_key)
    assert [s["schedule_id"] for s in listed["schedules"]] == [mine["schedule_id"]]


async def test_every_second_fires_each_tick_once_with_two_coordinators(http, edge, start_coordinator, api_key, target, redis):
    await start_coordinator(node_id="coordinator-a")
    await start_coordinator(node_id="coordinator-b")
    view = await create(http, edge, api_key, every_s=1, overlap="allow", job={"url": f"{target.url}/echo", "metadata": {"k": "v"}})
    sid = view["schedule_id"]
    view = await wait_schedule(http, edge, api_key, sid, lambda v: v["fired_count"] >= 5)
    await target.wait_for(5, "/echo")
    fired = await fired_jobs(redis, sid)
    ticks = [tick for tick, _ in fired]
    assert len(ticks) == len(set(ticks)) >= 5
    assert ticks[0] == view["created_at_ms"] + 1000  # ticks count from the schedule's creation
    assert all(b - a == 1000 for a, b in itertools.pairwise(ticks)), ticks  # each tick, none twice, none skipped
    view = await schedule(http, edge, api_key, sid)
    assert view["fired_count"] in (len(fired), len(fired) + 1)  # one more may have fired since the scan
    job = await get_job(http, edge.url, api_key, fired[0][1])
    assert job["schedule_id"] == sid and job["idempotent_key"] == f"sched:{sid}:{ticks[0]}" and job["metadata"] == {"k": "v"}
    await wait_final(http, edge.url, api_key, fired[0][1])


async def test_ticks_missed_while_no_coordinator_ran_fire_once(http, edge, start_coordinator, api_key, target, redis):
    view = await create(http, edge, api_key, every_s=1, overlap="allow", job={"url": f"{target.url}/echo"})
    sid = view["schedule_id"]
    missed_before = ticks("missed_collapsed")
    await asyncio.sleep(3.5)  # three ticks pass with no coordinator
    started = int(time.time() * 1000)
    await start_coordinator(node_id="coordinator-late")
    await wait_schedule(http, edge, api_key, sid, lambda v: v["fired_count"] >= 2)
    fired = await fired_jobs(redis, sid)
    missed = [tick for tick, _ in fired if tick <= started]
    assert missed == [view["next_fire_at_ms"]], fired  # the missed ticks: one job, for the first of them
    assert ticks("missed_collapsed") - missed_before >= 2  # the two or three after the first, folded into it, counted
    assert all(tick > started for tick, _ in fired[1:])


async def test_overlap_skip_waits_for_the_last_job_to_end(http, edge, coordinator, api_key, target, redis):
    fired_before, skipped_before = ticks("fired"), ticks("skipped")
    view = await create(http, edge, api_key, every_s=1, job={"url": f"{target.url}/delay/2500"})
    sid = view["schedule_id"]
    view = await wait_schedule(http, edge, api_key, sid, lambda v: v["skipped_count"] >= 1)
    assert ticks("fired") - fired_before >= 1 and ticks("skipped") - skipped_before >= 1
    first = view["last_job_id"]
    assert view["fired_count"] == 1 and (await get_job(http, edge.url, api_key, first))["status"] not in ("success", "failed")
    await wait_final(http, edge.url, api_key, first)
    view = await wait_schedule(http, edge, api_key, sid, lambda v: v["fired_count"] >= 2)
    assert view["last_job_id"] != first
    fired = await fired_jobs(redis, sid)
    assert len(fired) == 2 and fired[1][0] - fired[0][0] >= 2000  # the ticks in between were skipped


async def test_pause_and_resume(http, edge, coordinator, api_key, target, redis):
    view = await create(http, edge, api_key, every_s=1, overlap="allow", job={"url": f"{target.url}/echo"})
    sid = view["schedule_id"]
    await wait_schedule(http, edge, api_key, sid, lambda v: v["fired_count"] >= 1)
    status, paused = await call(http, "PATCH", f"{edge.url}/api/v1/schedules/{sid}", api_key, {"paused": True})
    assert status == 200 and paused["paused"]
    count = len(await fired_jobs(redis, sid))
    await asyncio.sleep(2.5)  # two ticks' time, paused
    assert len(await fired_jobs(redis, sid)) == count
    resumed_at = int(time.time() * 1000)
    status, resumed = await call(http, "PATCH", f"{edge.url}/api/v1/schedules/{sid}", api_key, {"paused": False})
    assert status == 200 and resumed["next_fire_at_ms"] > resumed_at
    await wait_schedule(http, edge, api_key, sid, lambda v: v["fired_count"] >= count + 1)
    fired = await fired_jobs(redis, sid)
    assert [t for t, _ in fired if t > resumed_at - 1000 and t <= resumed_at] == []  # nothing fired for the paused ticks


async def test_a_tick_over_the_quota_is_skipped_and_recorded(http, start_edge, start_coordinator, api_key, target, redis):
    tiers = {"free": Tier("free", 1, 1)}
    edge = await start_edge("iad", tiers=tiers)
    await start_coordinator(node_id="coordinator-q", tiers=tiers)
    view = await create(http, edge, api_key, every_s=1, overlap="allow", job={"url": f"{target.url}/echo"})
    sid = view["schedule_id"]
    view = await wait_schedule(http, edge, api_key, sid, lambda v: v["last_error"] is not None)
    assert view["last_error"].startswith("quota_exceeded") and view["fired_count"] == 1
    assert len(await fired_jobs(redis, sid)) == 1
    status, usage = await call(http, "GET", f"{edge.url}/api/v1/usage", api_key)
    assert status == 200 and usage["count"] == 1


async def test_the_sdk_schedules_a_step(edge, coordinator, api_key, target):
    from ezthrottle import AsyncEZThrottle, NotFoundError, Step

    async with AsyncEZThrottle(api_key=api_key, base_url=edge.url) as client:
        created = await Step(client).url(f"{target.url}/echo").metadata({"via": "sdk"}).schedule_async(every_s=1, overlap="allow")
        sid = created["schedule_id"]
        assert created["every_s"] == 1 and created["job"]["metadata"] == {"via": "sdk"}
        assert [s["schedule_id"] for s in await client.list_schedules()] == [sid]
        deadline = time.monotonic() + 15
        while not (view := await client.get_schedule(sid))["last_job_id"]:
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.05)
        assert (await client.get_job(view["last_job_id"]))["schedule_id"] == sid
        assert (await client.pause_schedule(sid))["paused"] is True
        changed = await client.update_schedule(sid, cron="0 6 * * *", timezone="Europe/Paris", paused=False)
        assert changed["cron"] == "0 6 * * *" and changed["every_s"] is None and changed["paused"] is False
        assert (await client.delete_schedule(sid))["deleted"] is True
        with pytest.raises(NotFoundError):
            await client.get_schedule(sid)

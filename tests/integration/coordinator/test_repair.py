"""Jobs that nothing holds any more are queued again, and only those.

The loss is made the way a Redis Cluster failover makes it: the job's stream
entry is gone (acknowledged on the partition's master) but it never reached a
pacing queue (a write the domain's master lost).
"""

import asyncio
import os
import subprocess
import sys

import orjson
import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.common.redisconn import Scripts
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.coordinator.repair import Repairer
from ezthrottle_server.pacing.limiter import Limiter, PacingPolicy
from ezthrottle_server.pacing.scope import SHARED, Scope
from support.jobs import submit, wait_final
from support.services import REGIONS_FILE, make_settings

pytestmark = pytest.mark.asyncio


class Leader:
    is_leader = True


async def queued_in_lax(http, redis, edge, api_key, target, n=0):
    """A job waiting in lax's stream (no lax edge runs yet), and its stream entry."""
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n={n}", "regions": ["lax"], "region_policy": "strict"})
    stream = keys.region_stream(keys.job_partition(job["job_id"]), "lax")
    entries = [(entry, f["job"]) for entry, f in await redis.xrange(stream, "-", "+")]
    assert entries[-1][1] == job["job_id"]
    return job["job_id"], stream, entries[-1][0]


async def test_a_job_held_by_nothing_is_queued_again_and_sent_once(http, redis, start_edge, start_coordinator, api_key, target):
    iad = await start_edge("iad")
    job_id, stream, entry = await queued_in_lax(http, redis, iad, api_key, target)
    await redis.xdel(stream, entry)  # admitted and acknowledged; the parking was lost
    await start_coordinator(repair_after_s=0.3)
    await start_edge("lax")

    view = await wait_final(http, iad.url, api_key, job_id, timeout_s=15)
    assert view["status"] == "success"
    assert await redis.hget(keys.job(job_id), "repairs") == "1"
    assert len(target.matching("/echo")) == 1


async def test_jobs_waiting_in_a_stream_or_a_pacing_queue_are_left_alone(http, redis, redis_url, start_edge, api_key, target):
    iad = await start_edge("iad")
    waiting_id, _stream, _entry = await queued_in_lax(http, redis, iad, api_key, target)
    parked_id, parked_stream, parked_entry = await queued_in_lax(http, redis, iad, api_key, target, n=1)
    await redis.xdel(parked_stream, parked_entry)
    # The second job was admitted in lax: it waits in the domain's queue, but
    # the ready-set write that says so was lost.
    settings = make_settings("coordinator", redis_url, repair_after_s=0.0)
    limiter = Limiter(redis, PacingPolicy.from_settings(settings), "lax", settings.region_ids)
    scope = Scope(domain_of(target.url), SHARED)
    assert await limiter.admit(scope, [(parked_id, await redis.hget(keys.job(parked_id), "customer"))]) == 1
    await redis.zrem(keys.pacing_ready("lax"), scope.member)

    repairer = Repairer(settings, redis, Scripts(redis), Leader())
    for _ in range(3):
        assert await repairer.sweep() == 0
        await asyncio.sleep(0.01)
    for job_id in (waiting_id, parked_id):
        assert await redis.hget(keys.job(job_id), "repairs") is None
    assert await redis.xlen(keys.region_stream(keys.job_partition(waiting_id), "lax")) == 1
    assert await redis.zscore(keys.pacing_ready("lax"), scope.member) is not None  # its queue is served again

    lax = await start_edge("lax")
    for job_id in (waiting_id, parked_id):
        assert (await wait_final(http, lax.url, api_key, job_id, timeout_s=10))["status"] == "success"
    assert len(target.matching("/echo")) == 2


async def test_an_unheld_job_is_repaired_only_when_seen_twice_unchanged(http, redis, redis_url, start_edge, api_key, target):
    iad = await start_edge("iad")
    job_id, stream, entry = await queued_in_lax(http, redis, iad, api_key, target)
    await redis.xdel(stream, entry)
    settings = make_settings("coordinator", redis_url, repair_after_s=0.0)
    repairer = Repairer(settings, redis, Scripts(redis), Leader())

    assert await repairer.sweep() == 0  # first sight: only suspected
    await redis.hset(keys.job(job_id), "state", "scheduled")  # it moved meanwhile
    assert await repairer.sweep() == 0  # changed: suspected afresh
    assert await redis.xlen(stream) == 0
    assert await repairer.sweep() == 1
    assert await repairer.sweep() == 0  # now held by its stream entry
    assert [f["job"] for _id, f in await redis.xrange(stream, "-", "+")] == [job_id]
    assert await redis.hget(keys.job(job_id), "state") == "queued"


def admin(redis_url, *args):
    env = {**os.environ, "REDIS_URL": redis_url, "EZT_REGIONS_FILE": str(REGIONS_FILE)}
    return subprocess.run(
        [sys.executable, "-m", "ezthrottle_server.admin.cli", "--json", "jobs", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_the_admin_cli_shows_what_holds_a_job_and_repairs_what_nothing_holds(http, redis, redis_url, start_edge, api_key, target):
    iad = await start_edge("iad")
    job_id, stream, entry = await queued_in_lax(http, redis, iad, api_key, target)
    shown = admin(redis_url, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    view = orjson.loads(shown.stdout)
    assert view["state"] == "queued" and view["held_by"] == ["stream:lax"] and view["stuck"] is False

    await redis.xdel(stream, entry)
    view = orjson.loads(admin(redis_url, "show", job_id).stdout)
    assert view["held_by"] == [] and view["stuck"] is True

    dry = admin(redis_url, "repair", "--dry-run", "--wait-s", "0.2")
    assert dry.returncode == 1 and orjson.loads(dry.stdout) == {
        "dry_run": True,
        "jobs": [{"job_id": job_id, "state": "queued", "regions": ["lax"]}],
    }
    assert await redis.xlen(stream) == 0 and await redis.hget(keys.job(job_id), "repairs") is None  # a dry run changes nothing

    done = admin(redis_url, "repair", "--wait-s", "0.2")
    assert done.returncode == 0 and [j["job_id"] for j in orjson.loads(done.stdout)["jobs"]] == [job_id]
    view = orjson.loads(admin(redis_url, "show", job_id).stdout)
    assert view["held_by"] == ["stream:lax"] and view["repairs"] == 1
    assert orjson.loads(admin(redis_url, "repair", "--wait-s", "0.1").stdout)["jobs"] == []  # held now: nothing to do

    assert admin(redis_url, "show", "job_1700000000000_0123456789abcdefp0").returncode == 1


async def test_a_fanout_job_is_queued_again_only_in_the_region_that_has_not_reported(http, redis, redis_url, start_edge, api_key, target):
    iad = await start_edge("iad")
    job = await submit(
        http,
        iad.url,
        api_key,
        {"url": f"{target.url}/echo?fan=1", "regions": ["iad", "lax"], "region_policy": "strict", "execution_mode": "fanout"},
    )
    job_id = job["job_id"]
    await target.wait_for(1, "/echo", timeout_s=5)  # iad sent its copy
    async with asyncio.timeout(5):
        while await redis.hget(keys.job(job_id), "fanout:iad") is None:
            await asyncio.sleep(0.02)
    stream = keys.region_stream(keys.job_partition(job_id), "lax")
    [(entry, _fields)] = await redis.xrange(stream, "-", "+")
    await redis.xdel(stream, entry)  # lax's copy lost: the job waits for a region nothing will run

    repairer = Repairer(make_settings("coordinator", redis_url, repair_after_s=0.0), redis, Scripts(redis), Leader())
    assert await repairer.sweep() == 0
    assert await repairer.sweep() == 1
    [found] = repairer.found
    assert found["job_id"] == job_id and found["regions"] == ["lax"] and found["state"] not in ("success", "failed")
    assert await redis.xlen(keys.region_stream(keys.job_partition(job_id), "iad")) == 0  # iad is not asked again

    await start_edge("lax")
    view = await wait_final(http, iad.url, api_key, job_id, timeout_s=10)
    assert view["status"] == "success" and len(target.matching("/echo")) == 2
    assert sorted(a["region"] for a in view["attempts"]) == ["iad", "lax"]

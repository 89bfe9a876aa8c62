"""kill -9 the active coordinator: the standby takes over, and delayed jobs
(``retry_at``) are still released on time.

Delayed jobs live in Redis (``keys.delayed``), not in the coordinator. A job
due before the kill is released by the old leader; one due while nobody
holds the lease waits for the takeover; one due after it is released by the
new leader. So each job's first send starts within a few hundred ms of
``max(due, takeover)``, and never before it is due.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chaos.helpers import base_env, wait_until
from support.jobs import get_job, submit

pytestmark = pytest.mark.asyncio

JOBS = 28
FIRST_DUE_MS = 1500
SPACING_MS = 250
KILL_AT_MS = 2200  # after the first jobs are released, before most are due
LATE_MS = 300  # how late a release may start its send (poll + read + grant + send)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_kill_9_the_leader_the_standby_releases_delayed_jobs_on_time(procs, redis, redis_url, http, target, api_key):
    env = base_env(
        redis_url,
        EZT_PACING_DEFAULT_RPS="500",  # pacing must not be what makes a job late here
        EZT_PACING_MAX_RPS="1000",
        EZT_PACING_DEFAULT_MAX_CONCURRENT="32",
    )
    first = procs.start("coordinator", "coord-1", env)
    second = procs.start("coordinator", "coord-2", env)
    edge = procs.start("edge", "edge-iad-1", {**env, "EZT_REGION": "iad"})

    async def a_leader():
        leaders = [c for c in (first, second) if ((await c.health_async(http)) or {}).get("leader")]
        return leaders if len(leaders) == 1 else None

    [leader] = await wait_until(a_leader, 10, "one leader")
    standby = second if leader is first else first

    t0 = now_ms()
    dues = [t0 + FIRST_DUE_MS + i * SPACING_MS for i in range(JOBS)]
    jobs = []
    for i, due in enumerate(dues):
        job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "body": f"delayed-{i}", "retry_at": due})
        jobs.append((job["job_id"], due))
    assert now_ms() < dues[0], "submitting took longer than the first delay"

    await asyncio.sleep(max(0, (t0 + KILL_AT_MS - now_ms()) / 1000))
    killed_ms = now_ms()
    leader.kill9()

    async def standby_leads():
        return now_ms() if ((await standby.health_async(http)) or {}).get("leader") else None

    took_over_ms = await wait_until(standby_leads, 8, "the standby to take over", every_s=0.02)
    assert took_over_ms - killed_ms <= 5000, f"takeover took {took_over_ms - killed_ms} ms"

    views = {}
    for job_id, _due in jobs:

        async def final(job_id=job_id):
            view = await get_job(http, edge.url, api_key, job_id)
            return view if view["status"] in ("success", "failed") else None

        views[job_id] = await wait_until(final, 15, f"job {job_id} to finish")

    in_gap, worst_ms = 0, 0
    for job_id, due in jobs:
        view = views[job_id]
        assert view["status"] == "success", view
        started = view["attempts"][0]["started_ms"]
        assert started >= due, f"{job_id} was sent {due - started} ms before it was due"
        if killed_ms < due < took_over_ms:
            in_gap += 1
        released_by = max(due, took_over_ms) if due > killed_ms else due
        worst_ms = max(worst_ms, started - released_by)
        assert started - released_by <= LATE_MS, (
            f"{job_id} due at +{due - t0} ms started at +{started - t0} ms; killed at +{killed_ms - t0}, took over at +{took_over_ms - t0}"
        )
    assert in_gap >= 3, "no job fell due while nobody held the lease: the kill came too late to prove anything"
    assert any(due > took_over_ms for _, due in jobs), "no job was due after the takeover"
    assert len(target.matching("/echo")) == JOBS  # each sent once
    print(
        f"takeover {took_over_ms - killed_ms} ms after the kill; {in_gap} jobs fell due meanwhile;"
        f" latest send {worst_ms} ms after its release"
    )

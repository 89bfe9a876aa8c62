"""Delayed work and workflow continuations go on while the coordinator holding the lease is gone.

The lease is held by a coordinator that froze: it will not renew the lease
(nor act) for 30 s, and the coordinator under test stands by all along."""

import time

import pytest

from ezthrottle_server.common import keys
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


async def test_a_standby_releases_delayed_work_while_the_lease_holder_is_silent(http, redis, edge, start_coordinator, api_key, target):
    await redis.set(keys.coordinator_leader(), "coordinator-frozen", px=30_000)
    await start_coordinator()  # a standby
    due_ms = int(time.time() * 1000) + 600
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "retry_at": due_ms})
    [req] = await target.wait_for(1, "/echo", timeout_s=5)
    sent_ms = (req.at - time.monotonic()) * 1000 + time.time() * 1000
    assert due_ms - 5 <= sent_ms <= due_ms + 2_000  # the standby's pace (0.25 s), with slack for a loaded machine
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    assert await redis.get(keys.coordinator_leader()) == "coordinator-frozen"  # it was a standby all along


async def test_a_standby_starts_workflow_continuations_while_the_lease_holder_is_silent(
    http, redis, edge, start_coordinator, api_key, target
):
    await redis.set(keys.coordinator_leader(), "coordinator-frozen", px=30_000)
    await start_coordinator()  # a standby
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?step=1", "on_success": {"url": f"{target.url}/echo?step=2"}})
    assert (await wait_final(http, edge.url, api_key, job["job_id"]))["status"] == "success"
    await target.wait_for(2, "/echo", timeout_s=5)  # the child ran, started by the standby
    assert sorted(r.query["step"] for r in target.matching("/echo")) == ["1", "2"]
    assert await redis.get(keys.coordinator_leader()) == "coordinator-frozen"

"""Deadlines: a job's ``start_before_ms``.

A job not started by then ends ``expired`` (final, its webhooks say so) and
is never sent late: ``start_attempt.lua`` checks the deadline atomically as
an attempt starts, and the coordinator's ``deadline`` timer ends a job that
waits past it even if nothing ever grants it.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from integration.edge.job_control import FINAL, now_ms, queued_count
from support.jobs import auth, get_job, submit, wait_final

pytestmark = pytest.mark.asyncio


async def refused(http, edge, key, payload) -> dict[str, Any]:
    async with http.post(f"{edge.url}/api/v1/jobs", json=payload, headers=auth(key)) as resp:
        body = await resp.json()
        assert resp.status == 400, body
        return body["error"]


async def test_start_before_ms_is_validated(http, edge, api_key, target):
    url = f"{target.url}/echo"
    past = await refused(http, edge, api_key, {"url": url, "start_before_ms": now_ms() - 1})
    assert past["field"] == "start_before_ms" and "past" in past["message"]
    horizon = await refused(http, edge, api_key, {"url": url, "start_before_ms": now_ms() + 31 * 24 * 3600 * 1000})
    assert horizon["field"] == "start_before_ms" and "too far ahead" in horizon["message"]
    before_retry = await refused(http, edge, api_key, {"url": url, "retry_at": now_ms() + 5000, "start_before_ms": now_ms() + 4000})
    assert before_retry["field"] == "start_before_ms"
    for bad in ("soon", 1.5, True, -3):
        assert (await refused(http, edge, api_key, {"url": url, "start_before_ms": bad}))["field"] == "start_before_ms"
    nested = await refused(http, edge, api_key, {"url": url, "on_success": {"url": url, "start_before_ms": 5}})
    assert nested["field"] == "on_success.start_before_ms"


async def test_a_job_started_in_time_runs_and_shows_its_deadline(http, edge, api_key, target):
    deadline = now_ms() + 60_000
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo", "start_before_ms": deadline})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success" and view["start_before_ms"] == deadline


async def test_a_job_waiting_past_its_deadline_expires_and_is_never_sent(
    http, edge, coordinator, delivery, redis, api_key, target, receiver
):
    # The domain's two send slots are held for 2.5 s; the job waits in its queue, its deadline 0.4 s away.
    slow = [(await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/2500?busy={i}"}))["job_id"] for i in range(2)]
    await target.wait_for(2, path="/delay/2500")
    deadline = now_ms() + 400
    job = await submit(
        http,
        edge.url,
        api_key,
        {"url": f"{target.url}/echo?n=late", "start_before_ms": deadline, "webhooks": [{"url": f"{receiver.url}/hook"}]},
    )
    view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10, states=FINAL)
    assert view["status"] == "expired" and view["error"] == "start_before_passed"
    assert deadline <= view["finished_at_ms"] < deadline + 1500  # the timer, not the grant after the slow sends
    assert view["started_at_ms"] is None and view["attempts"] == []
    assert await queued_count(redis) == 2  # counted off once; the two slow jobs remain

    (hook,) = await receiver.wait_for(1, timeout_s=10)
    assert hook.json()["status"] == "expired" and hook.json()["job_id"] == job["job_id"]

    for job_id in slow:  # the queue is granted again: the expired job is skipped, never sent late
        await wait_final(http, edge.url, api_key, job_id, timeout_s=10)
    after = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=after"})
    await wait_final(http, edge.url, api_key, after["job_id"], timeout_s=10)
    assert [r.query.get("n") for r in target.matching("/echo")] == ["after"]


async def test_an_attempt_never_starts_after_the_deadline_even_without_the_timer(http, edge, redis, api_key, target):
    """No coordinator: only start_attempt.lua stands between a late grant and a send (and counts it expired)."""
    expired_before = REGISTRY.get_sample_value("ezt_jobs_expired_total", {"reason": "start_before_passed"}) or 0.0
    slow = [(await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/1200?busy={i}"}))["job_id"] for i in range(2)]
    await target.wait_for(2, path="/delay/1200")
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n=late", "start_before_ms": now_ms() + 300})
    for job_id in slow:
        await wait_final(http, edge.url, api_key, job_id, timeout_s=10)
    view = await wait_final(http, edge.url, api_key, job["job_id"], timeout_s=10, states=FINAL)
    assert view["status"] == "expired" and view["attempts"] == []
    assert target.matching("/echo") == []
    assert await queued_count(redis) == 0
    assert REGISTRY.get_sample_value("ezt_jobs_expired_total", {"reason": "start_before_passed"}) == expired_before + 1


async def test_an_expired_job_goes_on_to_its_on_failure(http, edge, coordinator, api_key, target, receiver):
    slow = [(await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/1500?busy={i}"}))["job_id"] for i in range(2)]
    await target.wait_for(2, path="/delay/1500")
    job = await submit(
        http,
        edge.url,
        api_key,
        # its on_failure goes to another domain (the receiver's port), not held up by the slow one
        {"url": f"{target.url}/echo?n=late", "start_before_ms": now_ms() + 300, "on_failure": {"url": f"{receiver.url}/on_failure"}},
    )
    await receiver.wait_for(1, path="/on_failure", timeout_s=10)
    view = await get_job(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "expired" and view["workflow"]["continuation"] == "on_failure"
    for job_id in slow:
        await wait_final(http, edge.url, api_key, job_id, timeout_s=10)
    assert target.matching("/echo") == []

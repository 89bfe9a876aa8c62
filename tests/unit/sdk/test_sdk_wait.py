"""``wait()`` and ``queue_and_wait()``: the event stream first, polling only without one."""

from __future__ import annotations

import builtins
import json
import logging
import time
from typing import Any

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, NotFoundError, TimeoutError, ValidationError

pytestmark = pytest.mark.timeout(30)

TARGET = "https://api.example.com/v1/x"


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


KEEP_ALIVE = b": keep-alive\n\n"


def submitted(client: EZThrottle, url: str = TARGET) -> str:
    job_id: str = client.submit_job(url)["job_id"]
    return job_id


def final_view(api: Any, job_id: str, status: str = "success") -> dict[str, Any]:
    result = {"status_code": 200, "headers": {}, "body": "ok"}
    api.set_job(job_id, status=status, result=result, attempts=[{"region": "iad"}])
    return api.job_view(job_id)


def events_requests(api: Any) -> list[Any]:
    return [r for r in api.api_requests() if r.path.endswith("/events")]


def test_follows_the_stream_to_completed_and_returns_its_view(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    queued = api.job_view(job_id)
    done = final_view(api, job_id)
    api.stream_events(
        job_id,
        [
            sse("snapshot", queued),
            KEEP_ALIVE,
            0.05,
            sse("dispatching", {"job_id": job_id, "region": "iad"}),
            sse("attempt", {"job_id": job_id, "status_code": 200}),
            sse("won", {"job_id": job_id, "region": "iad"}),
            0.05,
            sse("completed", done),
            2.0,  # anything after the final event is not waited for
        ],
    )
    started = time.monotonic()
    assert client.wait(job_id, 10) == done
    assert time.monotonic() - started < 1.5
    stream = events_requests(api)
    assert len(stream) == 1 and stream[0].headers["accept"] == "text/event-stream"
    assert stream[0].headers["authorization"] == f"Bearer {api.api_key}"
    gets = [r for r in api.api_requests() if r.method == "GET" and not r.path.endswith("/events")]
    assert gets == []  # no polling when the stream works


def test_a_final_snapshot_ends_the_wait_at_once(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    done = final_view(api, job_id, "failed")
    api.stream_events(job_id, [sse("snapshot", done), 5.0])
    assert client.wait(job_id, 10)["status"] == "failed"


def test_a_short_final_event_fetches_the_view_once(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    api.stream_events(
        job_id,
        [sse("snapshot", api.job_view(job_id)), sse("failed", {"job_id": job_id, "status": "failed"})],
    )
    done = final_view(api, job_id, "failed")
    assert client.wait(job_id, 10) == done
    gets = [r for r in api.api_requests() if r.method == "GET" and r.path.endswith(job_id)]
    assert len(gets) == 1


def test_an_attempt_failure_that_is_retried_does_not_end_the_wait(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    done = final_view(api, job_id)
    api.stream_events(
        job_id,
        [
            sse("failed", {"job_id": job_id, "status": "queued"}),
            sse("queued", {"job_id": job_id, "status": "queued"}),
            sse("completed", done),
        ],
    )
    assert client.wait(job_id, 10)["status"] == "success"


def test_a_broken_stream_is_reconnected(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    done = final_view(api, job_id)
    api.stream_events(
        job_id,
        [sse("snapshot", {**done, "status": "running"}), b"event: att"],  # cut mid-event
        [sse("snapshot", done)],
    )
    assert client.wait(job_id, 10) == done
    assert len(events_requests(api)) == 2


def test_keep_alives_do_not_stretch_the_timeout(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    api.stream_events(job_id, [sse("snapshot", api.job_view(job_id))] + [KEEP_ALIVE, 0.05] * 100)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0.5s") as info:
        client.wait(job_id, 0.5)
    assert 0.45 < time.monotonic() - started < 2.0
    assert "last status: queued" in str(info.value)
    assert isinstance(info.value, builtins.TimeoutError)


def test_a_silent_stream_times_out(client: EZThrottle, api: Any) -> None:
    job_id = submitted(client)
    api.stream_events(job_id, [sse("snapshot", api.job_view(job_id)), 3.0])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait(job_id, 0.4)
    assert time.monotonic() - started < 2.0


def test_without_an_event_stream_it_polls_with_backoff(client: EZThrottle, api: Any, caplog: pytest.LogCaptureFixture) -> None:
    job_id = submitted(client)
    # No stream configured: the route answers 404, as an edge without it does.
    caplog.set_level(logging.DEBUG, logger="ezthrottle")
    with pytest.raises(TimeoutError, match="last status: queued"):
        client.wait(job_id, 0.6, poll_interval_s=0.2)
    polls = [r for r in api.api_requests() if r.method == "GET" and r.path.endswith(job_id)]
    # the existence check, then polls at 0.05, 0.1, 0.2, 0.2... (not a busy loop)
    assert 3 <= len(polls) <= 7
    assert any("no event stream" in m for m in caplog.messages)
    done = final_view(api, job_id)
    assert client.wait(job_id, 5) == done


def test_unknown_job_and_bad_arguments(client: EZThrottle) -> None:
    with pytest.raises(NotFoundError, match="no job 'job_404'"):
        client.wait("job_404", 5)
    with pytest.raises(ValidationError, match="timeout_s"):
        client.wait("job_1", 0)
    with pytest.raises(ValidationError, match="job_id"):
        client.wait("", 5)


def test_queue_and_wait_really_waits(client: EZThrottle, api: Any) -> None:
    job_id = "job_1"  # the contract server numbers jobs from 1
    api.stream_events(job_id, [KEEP_ALIVE, 0.1, sse("completed", {"job_id": job_id, "status": "success"})])
    view = client.queue_and_wait(TARGET, "https://app.example.com/hook", "POST", body="b", timeout=10)
    assert view["job_id"] == job_id
    submit = next(r for r in api.api_requests() if r.method == "POST").json
    assert submit["webhooks"] == [{"url": "https://app.example.com/hook", "has_quorum_vote": True}]
    with pytest.raises(TimeoutError):
        client.queue_and_wait(TARGET + "?2", None, timeout=1, poll_interval=1)


@pytest.mark.asyncio
async def test_async_wait_follows_the_stream(async_client: AsyncEZThrottle, api: Any) -> None:
    job_id = (await async_client.submit_job(TARGET))["job_id"]
    done = final_view(api, job_id)
    api.stream_events(job_id, [sse("snapshot", api.job_view(job_id)), KEEP_ALIVE, 0.05, sse("completed", done)])
    assert await async_client.wait(job_id, 10) == done


@pytest.mark.asyncio
async def test_async_wait_polls_without_a_stream_and_times_out(async_client: AsyncEZThrottle, api: Any) -> None:
    job_id = (await async_client.submit_job(TARGET))["job_id"]
    with pytest.raises(TimeoutError):
        await async_client.wait(job_id, 0.3, poll_interval_s=0.1)
    final_view(api, job_id, "failed")
    assert (await async_client.wait(job_id, 5))["status"] == "failed"
    api.stream_events(job_id, [sse("snapshot", api.job_view(job_id))])
    assert (await async_client.queue_and_wait(TARGET, None, timeout=5))["status"] == "failed"

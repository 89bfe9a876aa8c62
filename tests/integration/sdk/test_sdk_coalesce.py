"""``coalesce_submits``: the async client's ``submit_job`` calls of one event-loop turn share one
``POST /api/v1/jobs/batch``, against a real edge; each call answers or raises as it would alone."""

from __future__ import annotations

import asyncio
import time

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, QuotaExceededError, ValidationError
from ezthrottle_server.common.metrics import API_REQUESTS
from ezthrottle_server.common.quotas import Tier
from integration.sdk.helpers import older_edge
from support.jobs import job_records, wait_final

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def requests(path: str, status: str) -> float:
    return API_REQUESTS.labels(path, status)._value.get()


def later() -> int:
    return int(time.time() * 1000) + 3_600_000  # parked: the edge only accepts them


async def test_the_submissions_of_one_turn_share_one_request_and_each_gets_its_own_answer(start_edge, api_key, target, redis):
    edge = await start_edge("iad")
    batches, singles = requests("/api/v1/jobs/batch", "200"), requests("/api/v1/jobs", "201")
    async with AsyncEZThrottle(api_key, base_url=edge.url, coalesce_submits=True) as client:
        answers = await asyncio.gather(
            *(client.submit_job(f"{target.url}/echo?n={i}", method="POST", body="x", retry_at=later()) for i in range(150)),
            client.submit_job(f"{target.url}/echo?n=3", method="POST", body="x", retry_at=later()),  # the same request as job 3
        )
        alone = await client.submit_job(f"{target.url}/echo", body="alone", retry_at=later())  # nothing else this turn
    assert requests("/api/v1/jobs/batch", "200") - batches == 2  # 100 + 51: one turn, in requests of at most 100
    assert requests("/api/v1/jobs", "201") - singles == 1  # the lone call went as a single submission
    # the two requests go concurrently: which of jobs 3 and 150 (the same request) is the duplicate follows their
    # arrival, as for two lone calls at once
    assert sorted((answers[3]["status"], answers[150]["status"])) == ["duplicate", "queued"]
    assert answers[150]["job_id"] == answers[3]["job_id"]
    assert [a["status"] for i, a in enumerate(answers[:150]) if i != 3] == ["queued"] * 149
    assert alone["status"] == "queued"
    assert len(await job_records(redis)) == 151
    async with AsyncEZThrottle(api_key, base_url=edge.url) as plain:  # each answer is its own job's
        for i in (0, 3, 99, 100, 149):
            assert (await plain.get_job(answers[i]["job_id"]))["url"] == f"{target.url}/echo?n={i}"


async def test_a_refused_job_raises_for_its_caller_only(start_edge, api_key, target, redis):
    edge = await start_edge("iad", tiers={"free": Tier("free", 2, 3)})
    async with AsyncEZThrottle(api_key, base_url=edge.url, coalesce_submits=True) as client:
        answers = await asyncio.gather(
            *(client.submit_job(f"{target.url}/echo", body=str(i), retry_at=later()) for i in range(5)), return_exceptions=True
        )
    assert [a["status"] for a in answers[:3]] == ["queued"] * 3  # type: ignore[index]
    for refused in answers[3:]:
        assert isinstance(refused, QuotaExceededError) and refused.status_code == 429 and refused.code == "quota_exceeded", refused
        assert refused.retry_after_s is not None and refused.retry_after_s > 0
    assert len(await job_records(redis)) == 3


async def test_a_job_only_the_server_finds_invalid_fails_alone_and_the_others_stand(start_edge, api_key, target, redis):
    edge = await start_edge("iad")
    async with AsyncEZThrottle(api_key, base_url=edge.url, coalesce_submits=True) as client:
        answers = await asyncio.gather(
            *(client.submit_job(f"{target.url}/echo", body=str(i), retry_at=later()) for i in range(4)),
            client.submit_job(f"{target.url}/echo", body="mars", regions=["mars"]),  # only the server knows its regions
            return_exceptions=True,
        )
    assert [a["status"] for a in answers[:4]] == ["queued"] * 4  # type: ignore[index]
    assert isinstance(answers[4], ValidationError) and answers[4].status_code == 400 and "regions" in str(answers[4])
    assert "jobs[" not in str(answers[4])  # its own request's message, as a lone submit_job gets it
    assert len(await job_records(redis)) == 4


async def test_against_a_server_without_the_batch_route_each_call_goes_alone(start_edge, api_key, target):
    edge = await start_edge("iad")
    seen: list[str] = []
    async with older_edge(edge.url, seen) as url:
        async with AsyncEZThrottle(api_key, base_url=url, coalesce_submits=True) as client:
            first = await asyncio.gather(*(client.submit_job(f"{target.url}/echo", body=f"a{i}", retry_at=later()) for i in range(3)))
            second = await asyncio.gather(*(client.submit_job(f"{target.url}/echo", body=f"b{i}", retry_at=later()) for i in range(3)))
        assert [a["status"] for a in first + second] == ["queued"] * 6
        assert seen.count("POST /api/v1/jobs/batch") == 1  # asked once; never again after the 404
        assert seen.count("POST /api/v1/jobs") == 6


async def test_the_jobs_run_and_the_sync_client_takes_the_option_too(http, start_edge, api_key, target):
    edge = await start_edge("iad")
    async with AsyncEZThrottle(api_key, base_url=edge.url, coalesce_submits=True) as client:
        answers = await asyncio.gather(*(client.submit_job(f"{target.url}/echo?n={i}") for i in range(5)))
    for i, a in enumerate(answers):
        view = await wait_final(http, edge.url, api_key, a["job_id"])
        assert view["status"] == "success" and view["url"] == f"{target.url}/echo?n={i}"
    with EZThrottle(api_key, base_url=edge.url, coalesce_submits=True) as sync:  # one job per call: nothing to coalesce
        answer = await asyncio.to_thread(sync.submit_job, f"{target.url}/echo?sync=1")
    assert (await wait_final(http, edge.url, api_key, answer["job_id"]))["status"] == "success"
    with pytest.raises(ValidationError, match="coalesce_submits"):
        AsyncEZThrottle(api_key, base_url=edge.url, coalesce_submits="yes")  # type: ignore[arg-type]

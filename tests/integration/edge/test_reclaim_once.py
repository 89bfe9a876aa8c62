"""A reclaimed stream entry does not send its job twice.

A node that dies after parking a job but before acknowledging its stream
entry leaves the entry pending; another node reclaims it after the
visibility timeout. By then the job may be under way or already sent: the
entry's attempt is that one, and must not be made again. The entries are
handed to the live node's admission directly (an entry id names when it
was written; whether it still exists in the stream does not matter to
admission), so no reader races for them.
"""

import asyncio
import time

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.edge.context import CTX
from support.jobs import get_job, submit, wait_final

pytestmark = pytest.mark.asyncio


def entry_written(ms: float) -> str:
    return f"{int(ms)}-0"


async def test_a_reclaimed_entry_of_a_job_under_way_is_not_parked_again(http, edge, api_key, target):
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/delay/1500"})
    await target.wait_for(1, "/delay/1500")
    worker = edge.app[CTX].worker
    stream = keys.region_stream(keys.job_partition(job["job_id"]), "iad")
    # The entry was written at submission; its node died before acknowledging it.
    await worker._admit(stream, [(entry_written(time.time() * 1000 - 60_000), {"job": job["job_id"]})], reclaimed=True)

    view = await wait_final(http, edge.url, api_key, job["job_id"])
    await asyncio.sleep(0.5)
    assert len(target.matching("/delay/1500")) == 1
    assert len(view["attempts"]) == 1


async def test_a_reclaimed_entry_is_needed_only_if_no_attempt_here_started_after_it(http, start_edge, api_key, target):
    edge = await start_edge("iad", retry_backoff_base_s=30, retry_backoff_cap_s=30)
    script = target.script("once", 500)  # fails first, then 200: the retry waits out a long backoff
    job = await submit(http, edge.url, api_key, {"url": script, "retry_policy": {"max_retries": 2}})
    async with asyncio.timeout(10):
        while len((await get_job(http, edge.url, api_key, job["job_id"]))["attempts"]) < 1:
            await asyncio.sleep(0.05)
    attempt_ms = (await get_job(http, edge.url, api_key, job["job_id"]))["attempts"][0]["started_ms"]
    worker = edge.app[CTX].worker
    stream = keys.region_stream(keys.job_partition(job["job_id"]), "iad")

    # Written before that attempt: the attempt was the entry's. Nothing is sent now.
    await worker._admit(stream, [(entry_written(attempt_ms - 1000), {"job": job["job_id"]})], reclaimed=True)
    await asyncio.sleep(1.0)
    assert len(target.matching("/script/once")) == 1

    # Written after it (a retry queued straight into the stream): still needed, sent now.
    await worker._admit(stream, [(entry_written(attempt_ms + 1), {"job": job["job_id"]})], reclaimed=True)
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success" and len(target.matching("/script/once")) == 2

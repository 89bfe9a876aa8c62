"""Connections to targets and webhook receivers are pooled and reused (issue 19).

Counted by the outbound connector (``common/outbound.py``):
``ezt_outbound_requests_total`` and ``ezt_outbound_connections_opened_total``
by kind. A hundred jobs to one loopback target, each with a webhook to one
loopback receiver, open about as many connections as run at once, not one per
request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ezthrottle_server.common.metrics import OUTBOUND_CONNECTIONS_OPENED, OUTBOUND_REQUESTS
from integration.delivery.helpers import all_in, wait_webhooks
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio

JOBS = 100
AT_ONCE = 4  # the target domain's sends in flight; the webhooks follow the jobs' pace
OUTBOUND_KINDS = ("target", "webhook")


def counts() -> dict[str, tuple[float, float]]:
    """(requests, new connections) by kind, in this process (the in-process edge and delivery worker)."""
    return {k: (OUTBOUND_REQUESTS.labels(k)._value.get(), OUTBOUND_CONNECTIONS_OPENED.labels(k)._value.get()) for k in OUTBOUND_KINDS}


async def test_a_hundred_jobs_and_webhooks_reuse_a_few_connections(
    http: Any, start_edge: Any, start_delivery: Any, api_key: str, target: Any, receiver: Any
) -> None:
    edge = await start_edge(
        "iad", pacing_default_rps=100.0, pacing_max_rps=100.0, pacing_default_max_concurrent=AT_ONCE, region_probe_interval_s=3600.0
    )
    await start_delivery(delivery_concurrency=AT_ONCE)
    before = counts()
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with sem:
            job = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?n={i}", "webhooks": [{"url": f"{receiver.url}/hook"}]})
            return str(job["job_id"])

    ids = await asyncio.gather(*(one(i) for i in range(JOBS)))
    for job_id in ids:
        assert (await wait_final(http, edge.url, api_key, job_id, timeout_s=30))["status"] == "success"
        await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))
    after = counts()
    sent, opened = {k: after[k][0] - before[k][0] for k in OUTBOUND_KINDS}, {k: after[k][1] - before[k][1] for k in OUTBOUND_KINDS}
    assert len(target.matching("/echo")) == JOBS and sent["target"] >= JOBS
    assert len(receiver.matching("/hook")) >= JOBS and sent["webhook"] >= JOBS
    # a connection per request in flight at most: each one reused for the rest
    assert 1 <= opened["target"] <= AT_ONCE, opened
    assert 1 <= opened["webhook"] <= 2 * AT_ONCE, opened  # the edge's and the delivery service's pools, if both send

"""A response body is stored once per job, not once per region (issue 14, "shared Redis that one tenant can fill").

Before: a fanout job kept each region's whole answer in ``fanout:<region>``
beside the job's ``result``: four copies of a body for three regions.
"""

from __future__ import annotations

import pytest

from ezthrottle_server.common import keys
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio

BODY = 50_000


async def test_a_fanout_jobs_body_is_stored_once(http, redis, start_edge, api_key, target):
    edges = [await start_edge(region) for region in ("iad", "lax", "ord")]
    job = await submit(
        http, edges[0].url, api_key, {"url": f"{target.url}/big/{BODY}", "regions": ["iad", "lax", "ord"], "execution_mode": "fanout"}
    )
    view = await wait_final(http, edges[0].url, api_key, job["job_id"], timeout_s=15)
    assert view["status"] == "success" and len(view["result"]["body"]) == BODY  # the body is still there, once
    assert {r: v["status"] for r, v in view["result"]["regions"].items()} == {"iad": "success", "lax": "success", "ord": "success"}
    record = await redis.hgetall(keys.job(job["job_id"]))
    per_region = {k: len(v) for k, v in record.items() if k.startswith("fanout:")}
    assert len(per_region) == 3 and max(per_region.values()) < 2_000, per_region  # status, code, headers: no body
    assert sum(len(v) for v in record.values()) < 2 * BODY  # one copy in the record (the spec and the rest are small)
    assert "fanout_body" not in record  # kept aside only until the job's result holds it

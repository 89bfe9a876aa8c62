"""A stopping edge leaves nothing it has read behind.

An entry an edge has read from its region's stream but not yet parked in a
pacing queue (its reader cancelled halfway by the stop, or the reply still on
its way) is pending under the edge's name. Were it left there, it would wait
out the visibility timeout (30 s here) before another edge reclaimed it; the
stopping edge parks it itself before it leaves.
"""

import pytest

from ezthrottle_server.common import keys
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


async def test_entries_read_but_not_admitted_are_admitted_by_the_edge_that_stops(http, start_edge, redis, api_key, target):
    lax = await start_edge("lax")  # takes the submission; the job is for iad, where no edge runs yet
    job = await submit(http, lax.url, api_key, {"url": f"{target.url}/echo", "regions": ["iad"], "region_policy": "strict"})
    stream, group = keys.region_stream(keys.job_partition(job["job_id"]), "iad"), keys.edge_group("iad")
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    read = await redis.xreadgroup(group, "edge-iad-a", {stream: ">"}, count=10)  # as edge A would, before parking it
    assert [fields["job"] for _entry, fields in read[0][1]] == [job["job_id"]]

    a = await start_edge("iad", node_id="edge-iad-a", visibility_timeout_ms=30_000)
    await a.stop()  # a graceful stop: SIGTERM in production
    assert (await redis.xpending(stream, group))["pending"] == 0

    b = await start_edge("iad", node_id="edge-iad-b", visibility_timeout_ms=30_000)
    view = await wait_final(http, b.url, api_key, job["job_id"], timeout_s=5)
    assert view["status"] == "success" and view["attempts"][0]["node"] == "edge-iad-b"

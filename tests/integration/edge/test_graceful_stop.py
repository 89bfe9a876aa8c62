"""A stopping edge leaves nothing it has read behind, and a starting one takes back what its name left.

An entry an edge has read from its region's stream but not yet parked in a
pacing queue (its reader cancelled halfway by the stop, or the reply still on
its way) is pending under the edge's name. Were it left there, it would wait
out the visibility timeout (30 s here) before another edge reclaimed it; the
stopping edge parks it itself before it leaves.

An edge that starts under a name something is still pending under (a worker
restarted in its slot, common/workers.py, after its predecessor died) admits
those entries at once, not after the visibility timeout.
"""

import pytest

from ezthrottle_server.common import keys
from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio


async def _read_for_iad(http, redis, lax_url, api_key, target, consumer):
    """A job for iad (taken by lax: no edge runs in iad yet), read from iad's stream as ``consumer``, not parked."""
    job = await submit(http, lax_url, api_key, {"url": f"{target.url}/echo", "regions": ["iad"], "region_policy": "strict"})
    stream, group = keys.region_stream(keys.job_partition(job["job_id"]), "iad"), keys.edge_group("iad")
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    read = await redis.xreadgroup(group, consumer, {stream: ">"}, count=10)
    assert [fields["job"] for _entry, fields in read[0][1]] == [job["job_id"]]
    return job, stream, group, read[0][1][0][0]


async def test_entries_read_but_not_admitted_are_admitted_by_the_edge_that_stops(http, start_edge, redis, api_key, target):
    lax = await start_edge("lax")
    # read by another consumer first, so edge A's start (which takes back its own name's entries) does not see it
    job, stream, group, entry = await _read_for_iad(http, redis, lax.url, api_key, target, "someone-else")
    a = await start_edge("iad", node_id="edge-iad-a", visibility_timeout_ms=30_000)
    # now pending under A's name while A runs, as an entry A's reader had read when the stop cancelled it
    assert await redis.xclaim(stream, group, "edge-iad-a", 0, [entry])
    await a.stop()  # a graceful stop: SIGTERM in production
    assert (await redis.xpending(stream, group))["pending"] == 0

    b = await start_edge("iad", node_id="edge-iad-b", visibility_timeout_ms=30_000)
    view = await wait_final(http, b.url, api_key, job["job_id"], timeout_s=5)
    assert view["status"] == "success" and view["attempts"][0]["node"] == "edge-iad-b"


async def test_an_edge_starting_under_a_name_admits_what_is_pending_under_it(http, start_edge, redis, api_key, target):
    lax = await start_edge("lax")
    job, stream, group, _entry = await _read_for_iad(http, redis, lax.url, api_key, target, "edge-iad-a")  # its predecessor died here

    a = await start_edge("iad", node_id="edge-iad-a", visibility_timeout_ms=30_000)
    view = await wait_final(http, a.url, api_key, job["job_id"], timeout_s=5)  # well within the 30 s visibility timeout
    assert view["status"] == "success" and view["attempts"][0]["node"] == "edge-iad-a"
    assert (await redis.xpending(stream, group))["pending"] == 0

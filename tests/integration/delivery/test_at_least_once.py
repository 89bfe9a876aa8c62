"""At least once: a delivery worker killed mid-delivery (SIGKILL, no ack) loses nothing."""

import asyncio
import signal
import subprocess
import sys

import pytest

from ezthrottle_server.common import keys
from integration.delivery.helpers import all_in, delivery_env, wait_webhooks
from support.jobs import submit
from support.redis_server import free_port

pytestmark = pytest.mark.asyncio


async def wait_ready(http, url, proc, timeout_s=20.0):
    async with asyncio.timeout(timeout_s):
        while True:
            assert proc.poll() is None, "the delivery process exited"
            try:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.05)


async def test_killed_delivery_worker_mid_post_the_delivery_still_happens(
    http, edge, start_delivery, api_key, target, receivers, redis, redis_url
):
    hold = await receivers(holding=1)  # the first POST never gets an answer
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ezthrottle_server.delivery"],
        env=delivery_env(redis_url, EZT_PORT=str(port), EZT_NODE_ID="delivery-doomed"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_ready(http, f"http://127.0.0.1:{port}", proc)
        job = await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": f"{hold.url}/hook"}]})
        await hold.wait_for(1)  # the doomed worker is mid-POST
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # Nothing was recorded or acknowledged: the send is pending on the dead worker.
    sends = keys.delivery_sends(keys.job_partition(job["job_id"]), "any")
    pending = await redis.xpending(sends, keys.delivery_group())
    assert pending["pending"] == 1 and pending["consumers"] == [{"name": "delivery-doomed", "pending": 1}]
    hooks = await redis.hgetall(keys.job_webhooks(job["job_id"]))
    assert hooks["0:state"] == "pending" and hooks["0:attempts"] == "0"

    await start_delivery(visibility_timeout_ms=300)
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("delivered"))
    assert view["webhooks"]["quorum_met"] is True
    first, second = await hold.wait_for(2)
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    assert (await redis.xpending(sends, keys.delivery_group()))["pending"] == 0


async def test_finished_jobs_read_by_a_worker_that_died_are_delivered(http, edge, start_delivery, api_key, target, receivers, redis):
    """Deliveries entries read, then never planned nor acknowledged (the reader died), are taken over."""
    r = await receivers()
    streams = [keys.deliveries(p) for p in range(edge.settings.partitions)]  # a cluster run spreads jobs over several
    for stream in streams:
        await redis.xgroup_create(stream, keys.delivery_group(), id="0", mkstream=True)
    jobs = [
        (await submit(http, edge.url, api_key, {"url": f"{target.url}/status/200?i={i}", "webhooks": [{"url": r.url}]}))["job_id"]
        for i in range(3)
    ]

    async def queued() -> int:
        return sum([await redis.xlen(s) for s in streams])

    async with asyncio.timeout(10):
        while await queued() < 3:
            await asyncio.sleep(0.02)
    taken = [
        e
        for s in streams
        for _s, entries in await redis.xreadgroup(keys.delivery_group(), "delivery-ghost", {s: ">"}, count=10)
        for e in entries
    ]
    assert len(taken) == 3  # and the ghost dies here, holding them

    await start_delivery(visibility_timeout_ms=300)
    for job_id in jobs:
        await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))
    assert sorted(req.json()["job_id"] for req in r.requests) == sorted(jobs)
    for stream in streams:
        assert (await redis.xpending(stream, keys.delivery_group()))["pending"] == 0

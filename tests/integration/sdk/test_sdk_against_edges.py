"""Our SDK against real edges: failover without double submission, waiting, 1,000 at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, IdempotentStrategy, Step
from ezthrottle_server.common import keys
from support.redis_server import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


async def job_ids(redis: Any) -> list[str]:
    found = await redis.keys("ezt:{ezt:p*}:job:*")
    return sorted(k.rsplit(":", 1)[1] for k in found if k.rsplit(":", 1)[1].startswith("job_"))


class ResponseDropper:
    """A loopback TCP proxy that delivers each request to the edge, then hangs up
    without relaying the answer: the job is accepted, and the client sees a
    dropped connection. The case where a careless retry makes a second job."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.forwarded = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ResponseDropper:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                0,
            )
            body = await reader.readexactly(length)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head.replace(b"keep-alive", b"close") + body)
            await up_writer.drain()
            await up_reader.read()  # the edge has answered: the job exists
            self.forwarded += 1
            up_writer.close()
        finally:
            writer.close()  # ... and the client never hears of it


async def test_nearest_live_edge_and_failover_when_it_stops(start_edge, api_key, target, redis):
    iad, lax, ord_ = await start_edge("iad"), await start_edge("lax"), await start_edge("ord")
    await ord_.stop()
    async with AsyncEZThrottle(api_key, base_url=[ord_.url, lax.url, iad.url]) as client:
        first = await client.submit_job(f"{target.url}/echo", idempotent_key="a")
        assert first["status"] == "queued"
        assert client.base_url in (lax.url, iad.url) and client.edges.order[-1] == ord_.url
        in_use = client.base_url
        await (lax if in_use == lax.url else iad).stop()
        second = await client.submit_job(f"{target.url}/echo", idempotent_key="b")
        assert second["status"] == "queued"
        assert client.base_url != in_use
    assert await job_ids(redis) == sorted([first["job_id"], second["job_id"]])


@pytest.mark.parametrize("strategy", ["custom", "unique", "hash"])
async def test_a_retry_after_a_dropped_answer_never_makes_a_second_job(strategy, start_edge, api_key, target, redis):
    iad, lax = await start_edge("iad"), await start_edge("lax")
    dropper = await ResponseDropper(iad.settings.port).start()
    try:
        async with AsyncEZThrottle(api_key, base_url=[dropper.url, lax.url]) as client:
            client.edges.ranked({dropper.url: 0.001, lax.url: 0.002})  # the dropper looks nearest
            step = Step(client).url(f"{target.url}/echo").method("POST").body(strategy)
            if strategy == "custom":
                step.idempotent_key("order-42")
            elif strategy == "unique":
                step.idempotent_strategy(IdempotentStrategy.UNIQUE)
            result = await step.execute_async()
    finally:
        await dropper.stop()
    assert dropper.forwarded == 1  # the first edge accepted it ...
    assert result["status"] == "duplicate"  # ... and the retry on the next edge found it
    assert await job_ids(redis) == [result["job_id"]]


async def test_wait_returns_the_final_view_sync_and_async(start_edge, api_key, target):
    edge = await start_edge("iad")
    async with AsyncEZThrottle(api_key, base_url=edge.url) as client:
        job = await client.submit_job(f"{target.url}/echo", "POST", body="hello")
        view = await client.wait(job["job_id"], 20)
        assert view["status"] == "success" and view["result"]["status_code"] == 200
        assert view["job_id"] == job["job_id"]
    with EZThrottle(api_key, base_url=edge.url) as sync_client:
        # the edge serves from this event loop, so the sync client runs in a thread
        done = await asyncio.to_thread(sync_client.queue_and_wait, f"{target.url}/echo?again", None, "GET", None, None, 20)
        assert done["status"] == "success"
        failed_job = await asyncio.to_thread(sync_client.submit_job, f"{target.url}/status/418", retry_policy={"max_retries": 0})
        failed = await asyncio.to_thread(sync_client.wait, failed_job["job_id"], 20)
        assert failed["status"] == "failed"


async def test_a_thousand_concurrent_submissions_over_bounded_connections(start_edge, api_key, target, redis):
    edge = await start_edge("iad")
    later_ms = int(time.time() * 1000) + 3_600_000  # scheduled, so the edge only accepts them
    started = time.monotonic()
    async with AsyncEZThrottle(api_key, base_url=edge.url, max_connections=20) as client:
        results = await asyncio.gather(
            *(client.submit_job(f"{target.url}/echo", body=f"order-{i}", retry_at=later_ms) for i in range(1000))
        )
        pool = client._http._transport._pool
        assert len(pool.connections) <= 20
    # ~2 s here; httpx's pool alone, with 1,000 waiters, took 25 s (the SDK queues them itself)
    assert time.monotonic() - started < 15
    assert {r["status"] for r in results} == {"queued"}
    assert len({r["job_id"] for r in results}) == 1000
    assert len(await job_ids(redis)) == 1000
    assert await redis.zcard(keys.delayed(0)) == 1000

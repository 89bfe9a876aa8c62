"""A circuit breaker per target domain: a dead target is probed, not hammered, and its jobs run once it is back.

Jobs to a closed loopback port fail to connect. After a few failures in a
row the domain's circuit opens: its jobs wait instead of spending attempts,
one probe goes when the backoff is up (1 s, doubling to 60 s), and the
first answer from the target closes the circuit for everyone.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from ezthrottle_server.common import keys
from ezthrottle_server.edge.context import CTX
from ezthrottle_server.pacing.scope import Scope
from integration.pacing.pacing_helpers import submit_many
from support.jobs import get_job, wait_final
from support.redis_server import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

JOBS = 100


async def attempts_made(redis, job_ids: list[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.llen(keys.attempts(job_id))
        return sum(await pipe.execute())


async def test_a_dead_domain_is_probed_not_hammered_and_its_jobs_run_when_it_is_back(
    http, redis, start_edge, start_coordinator, api_key, tmp_path
):
    port = free_port()  # nothing listens: every connect is refused
    domain = f"127.0.0.1:{port}"
    domains = tmp_path / "domains.yaml"
    domains.write_text(f"domains:\n  {domain}: {{rps: 50, max_concurrent: 4}}\n")
    await start_coordinator(domains_file=str(domains))  # it applies this file (and would replace what a test wrote)
    async with asyncio.timeout(10):
        while await redis.hget(keys.pacing_conf(domain), "rps") is None:
            await asyncio.sleep(0.05)
    edges = [await start_edge(region) for region in ("iad", "lax", "ord")]
    ids = await submit_many(http, [e.url for e in edges], api_key, [{"url": f"http://{domain}/job?n={i}"} for i in range(JOBS)])

    await asyncio.sleep(6.0)  # at 50/s, 100 jobs x 3 regions would spend 300 attempts in this time
    spent = await attempts_made(redis, ids)
    assert 5 <= spent <= 20, spent
    view = await edges[0].app[CTX].worker.limiter.describe(domain)
    assert view.circuit in ("open", "half_open")
    waiting = [v for v in [await get_job(http, edges[0].url, api_key, j) for j in ids[-10:]] if v["status"] in ("queued", "scheduled")]
    assert waiting and all(v["waiting_on"] == "circuit_open" for v in waiting)

    async def back(_request: web.Request) -> web.Response:
        return web.Response(text="back")

    app = web.Application()
    app.router.add_get("/job", back)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        views = [await wait_final(http, edges[0].url, api_key, j, timeout_s=40) for j in ids]
        succeeded = [v for v in views if v["status"] == "success"]
        # every job ran once the target was back, but those whose budget the failed probes spent
        assert len(succeeded) >= JOBS - spent, (len(succeeded), spent)
        assert (await edges[0].app[CTX].worker.limiter.describe(domain)).circuit == "closed"
    finally:
        await runner.cleanup()


async def test_a_job_whose_budget_or_deadline_runs_out_while_the_circuit_is_open_fails_with_circuit_open(
    http, redis, start_edge, start_coordinator, api_key, tmp_path
):
    port = free_port()  # nothing listens: every connect is refused
    domain = f"127.0.0.1:{port}"
    domains = tmp_path / "domains.yaml"
    domains.write_text(f"domains:\n  {domain}: {{rps: 50, max_concurrent: 1}}\n")  # one send at a time: the 5th failure opens it
    await start_coordinator(domains_file=str(domains))  # its deadline timers end the job with start_before_ms
    async with asyncio.timeout(10):
        while await redis.hget(keys.pacing_conf(domain), "rps") is None:
            await asyncio.sleep(0.05)
    edge = await start_edge("iad")
    no_budget = {"retry_policy": {"max_retries": 0, "max_reroutes": 0}, "regions": ["iad"], "region_policy": "strict"}
    ids = await submit_many(http, [edge.url], api_key, [{"url": f"http://{domain}/job?n={i}", **no_budget} for i in range(7)])
    async with asyncio.timeout(10):
        while not await edge.app[CTX].worker.limiter.circuit_open(Scope(domain)):
            await asyncio.sleep(0.05)
    # waits on the open circuit, with no attempt started, until its deadline passes
    deadline = {"url": f"http://{domain}/deadline", "start_before_ms": int(time.time() * 1000) + 600, **no_budget}
    (late,) = await submit_many(http, [edge.url], api_key, [deadline])

    views = [await wait_final(http, edge.url, api_key, j, timeout_s=20) for j in ids]
    assert all(v["status"] == "failed" for v in views), [v["status"] for v in views]
    errors = [v["error"] for v in views]
    # the five failures that opened it are the usual kind; the probes after it failed on the open circuit
    assert errors.count("circuit_open") >= 2 and {e for e in errors if e != "circuit_open"} == {"reroutes_exhausted"}, errors
    view = await wait_final(http, edge.url, api_key, late, timeout_s=20)
    assert (view["status"], view["error"]) == ("failed", "circuit_open"), view

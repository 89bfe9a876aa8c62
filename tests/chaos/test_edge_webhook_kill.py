"""kill -9 the edge that finished a job before it delivered the job's webhooks: the
delivery service delivers them after the hand-off's grace, each receiver's vote counted once.

The edge sends the first attempt of a finished job's webhooks itself
(edge/webhooks.py); finish.lua leaves a hand-off the delivery service takes
only when its time has passed. Two deaths:

- after finish, before the claim: the edge runs with the test-only
  ``test_hold_edge_webhooks`` (it finishes jobs and never takes their webhooks,
  as if it died right there), then is killed;
- mid-POST: the receiver holds the edge's POST open, and the edge is killed
  while it waits. A job's only webhook is POSTed before its hand-off is
  claimed (its record writes the plan): mid-POST nothing is planned yet, and
  the edge has kept the hand-off from the sweep for one POST more.

The edge is a real process (launched with that setting, which no environment
variable sets); the delivery service runs in the test's process and is
running all along, so it also shows it does not take a hand-off early.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.helpers import base_env, tail, wait_until
from ezthrottle_server.common import keys
from ezthrottle_server.common.metrics import WEBHOOK_HANDOFFS_SWEPT
from integration.delivery.helpers import HoldingReceiver
from support.jobs import get_job, submit
from support.redis_server import free_port
from support.services import app_starter
from support.targets import WebhookReceiver

pytestmark = pytest.mark.asyncio

GRACE_S = 1.0
POST_TIMEOUT_S = 5.0  # the edge's: its held POST is still going when it is killed

# An edge with settings from the environment, plus the test-only hold (no environment variable sets it).
LAUNCHER = """
import sys
from aiohttp import web
from ezthrottle_server.common.config import load_settings
from ezthrottle_server.common.logs import setup_logging
from ezthrottle_server.edge.app import create_app

settings = load_settings("edge").with_overrides(test_hold_edge_webhooks=sys.argv[1] == "hold")
setup_logging("edge", settings.node_id)
web.run_app(create_app(settings), host="127.0.0.1", port=settings.port, print=None, access_log=None)
"""


async def _start_edge(tmp_path: Path, redis_url: str, http: Any, mode: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = base_env(
        redis_url,
        EZT_REGION="iad",
        EZT_PORT=str(port),
        EZT_NODE_ID=f"edge-doomed-{mode}",
        EZT_EDGE_WEBHOOK_GRACE_S=str(GRACE_S),
        EZT_DELIVERY_TIMEOUT_S=str(POST_TIMEOUT_S),
    )
    log = tmp_path / f"edge-{mode}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, mode], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.poll() is None, f"the edge exited:\n{tail(log)}"
        try:
            async with http.get(f"{url}/readyz") as resp:
                return resp.status == 200
        except OSError:
            return False

    await wait_until(ready, 30, "the edge to be ready")
    return proc, url, log


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _start_delivery(redis_url: str) -> Any:
    from ezthrottle_server.delivery.app import create_app

    return app_starter(
        "delivery", redis_url, lambda s: create_app(s, stop_grace_s=1.0), delivery_poll_s=0.01, delivery_timeout_s=2.0, node_id="delivery-t"
    )


async def test_edge_killed_after_finish_before_its_webhooks_delivery_sends_them_after_the_grace(
    tmp_path, redis, redis_url, http, api_key, target
):
    swept_before = WEBHOOK_HANDOFFS_SWEPT._value.get()
    proc, url, log = await _start_edge(tmp_path, redis_url, http, "hold")
    receivers = [WebhookReceiver(), WebhookReceiver()]
    try:
        for r in receivers:
            await r.start()
        async with _start_delivery(redis_url) as start_delivery:
            await start_delivery()
            job = await submit(
                http,
                url,
                api_key,
                {"url": f"{target.url}/status/200", "webhook_quorum": 2, "webhooks": [{"url": f"{r.url}/hook"} for r in receivers]},
            )
            job_id = job["job_id"]
            p = keys.job_partition(job_id)

            async def final() -> Any:
                return (await get_job(http, url, api_key, job_id))["status"] == "success"

            await wait_until(final, 15, "the job to succeed")
            # Finished: handed to the edge, which did not take it; the delivery service waits out the grace.
            assert await redis.zscore(keys.delivery_handoff(p), job_id) is not None
            assert await redis.exists(keys.job_webhooks(job_id)) == 0
            _kill9(proc)
            finished_ms = int(await redis.hget(keys.job(job_id), "finished_ms"))

            async def delivered() -> Any:
                hooks = await redis.hgetall(keys.job_webhooks(job_id))
                return hooks if hooks.get("quorum_met_ms") else None

            hooks = await wait_until(delivered, 20, "the delivery service to deliver the webhooks")
            for r in receivers:
                await r.wait_for(1)
            assert [len(r.requests) for r in receivers] == [1, 1]
            assert hooks["votes"] == "2" and hooks["0:state"] == hooks["1:state"] == "delivered"
            assert hooks["0:sent_by"] == hooks["1:sent_by"] == "delivery-t"
            assert int(hooks["planned_ms"]) >= finished_ms + GRACE_S * 1000  # not before the grace
            assert await redis.zcard(keys.delivery_handoff(p)) == 0
            assert WEBHOOK_HANDOFFS_SWEPT._value.get() - swept_before == 1
            body = receivers[0].requests[0].json()
            assert body["job_id"] == job_id and body["status"] == "success"
    finally:
        _kill9(proc)
        for r in receivers:
            await r.stop()
    assert "Traceback" not in log.read_text(errors="replace")


async def test_edge_killed_mid_post_delivery_sends_again_and_the_vote_counts_once(tmp_path, redis, redis_url, http, api_key, target):
    proc, url, _log = await _start_edge(tmp_path, redis_url, http, "normal")
    hold = HoldingReceiver(hold=1)
    try:
        await hold.start()
        async with _start_delivery(redis_url) as start_delivery:
            await start_delivery()
            job = await submit(http, url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": f"{hold.url}/hook"}]})
            job_id = job["job_id"]
            p = keys.job_partition(job_id)
            await hold.wait_for(1)  # the edge is mid-POST, the job's webhook not planned yet
            assert await redis.exists(keys.job_webhooks(job_id)) == 0
            finished_ms = int(await redis.hget(keys.job(job_id), "finished_ms"))
            assert await redis.zscore(keys.delivery_handoff(p), job_id) == finished_ms + GRACE_S * 1000

            async def held() -> Any:  # half the grace into the POST: held for one POST more (its timeout, a 5 s margin)
                score = await redis.zscore(keys.delivery_handoff(p), job_id)
                return score is not None and score >= finished_ms + (GRACE_S / 2 + GRACE_S + POST_TIMEOUT_S + 5) * 1000

            await wait_until(held, 10, "the edge to hold the hand-off through its slow POST")
            await asyncio.sleep(GRACE_S)  # past the grace: the delivery service leaves it alone while the edge holds it
            assert await redis.exists(keys.job_webhooks(job_id)) == 0 and len(hold.requests) == 1
            _kill9(proc)

            async def delivered() -> Any:
                hooks = await redis.hgetall(keys.job_webhooks(job_id))
                return hooks if hooks.get("0:state") == "delivered" else None

            hooks = await wait_until(delivered, 30, "the delivery service to deliver the webhook")
            first, second = await hold.wait_for(2)
            assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
            assert hooks["votes"] == "1" and hooks["0:sent_by"] == "delivery-t" and "0:edge" not in hooks
            assert await redis.zcard(keys.delivery_handoff(p)) == 0
    finally:
        _kill9(proc)
        await hold.stop()

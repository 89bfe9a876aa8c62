"""After the retry window a webhook is dead-lettered; the API and the CLI list and replay it."""

import asyncio
import subprocess
import sys

import orjson
import pytest

from ezthrottle_server.common import keys
from integration.delivery.helpers import all_in, closed_port, wait_webhooks
from support.jobs import auth, submit
from support.services import REGIONS_FILE, partitions_env

pytestmark = pytest.mark.asyncio

SHORT_WINDOW = {"delivery_window_s": 0.3}


async def dead_job(http, edge, key, target, port):
    job = await submit(http, edge.url, key, {"url": f"{target.url}/status/200", "webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]})
    view = await wait_webhooks(http, edge.url, key, job["job_id"], all_in("dead"))
    return job["job_id"], view["webhooks"]["endpoints"][0]


async def api(http, method, url, key):
    async with http.request(method, url, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def admin(redis_url, *args):
    argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, *args]
    env = {"EZT_REGIONS_FILE": str(REGIONS_FILE), "PATH": "/usr/bin:/bin", **partitions_env()}
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_dead_letter_listed_and_replayed_over_the_api(http, edge, start_delivery, api_key, other_api_key, target, receivers, redis):
    await start_delivery(**SHORT_WINDOW)
    port = closed_port()
    job_id, endpoint = await dead_job(http, edge, api_key, target, port)
    assert endpoint["dead_reason"] == "window_exhausted" and endpoint["attempts"] >= 2 and endpoint["dead_at_ms"]
    assert "Connect" in endpoint["last_error"]

    status, body = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead", api_key)
    assert status == 200 and body["count"] == 1
    [entry] = body["dead"]
    assert entry["job_id"] == job_id and entry["job_status"] == "success" and entry["dead_at_ms"]
    [hook] = entry["webhooks"]
    assert hook["index"] == 0 and hook["url"] == f"http://127.0.0.1:{port}/hook" and hook["dead_reason"] == "window_exhausted"

    # Another customer sees none of it and cannot replay it.
    assert (await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead", other_api_key))[1] == {"dead": [], "count": 0}
    status, body = await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/{job_id}/replay", other_api_key)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert (await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/nope/replay", api_key))[0] == 404

    receiver = await receivers(port=port)
    status, body = await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/{job_id}/replay", api_key)
    assert status == 200 and body == {"job_id": job_id, "replayed": 1}
    view = await wait_webhooks(http, edge.url, api_key, job_id, all_in("delivered"))
    assert view["webhooks"]["quorum_met"] is True and view["webhooks"]["endpoints"][0]["dead_reason"] is None
    assert [r.json()["job_id"] for r in receiver.requests] == [job_id]
    assert (await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead", api_key))[1]["count"] == 0
    assert await redis.zcard(keys.delivery_dead(0)) == 0
    # Replaying again finds nothing dead.
    status, body = await api(http, "POST", f"{edge.url}/api/v1/deliveries/dead/{job_id}/replay", api_key)
    assert status == 200 and body["replayed"] == 0


async def test_bad_limit_is_a_400(http, edge, api_key):
    for limit in ("0", "x", "100000"):
        status, body = await api(http, "GET", f"{edge.url}/api/v1/deliveries/dead?limit={limit}", api_key)
        assert status == 400 and body["error"]["field"] == "limit"


async def test_cli_lists_and_replays_dead_letters(http, edge, start_delivery, api_key, other_api_key, target, receivers, redis_url):
    await start_delivery(**SHORT_WINDOW)
    port = closed_port()
    mine, _ = await dead_job(http, edge, api_key, target, port)
    theirs, _ = await dead_job(http, edge, other_api_key, target, port)

    listed = orjson.loads(await admin(redis_url, "--json", "deliveries", "dead"))
    assert {e["job_id"]: e["customer"] for e in listed} == {mine: "acme", theirs: "globex"}
    assert [e["job_id"] for e in orjson.loads(await admin(redis_url, "--json", "deliveries", "dead", "--customer", "globex"))] == [theirs]
    text = await admin(redis_url, "deliveries", "dead")
    assert mine in text and "window_exhausted" in text

    receiver = await receivers(port=port)
    assert orjson.loads(await admin(redis_url, "--json", "deliveries", "replay", mine)) == {"jobs": 1, "replayed": 1}
    await wait_webhooks(http, edge.url, api_key, mine, all_in("delivered"))
    assert "replayed 1 webhook(s) of 1 job(s)" in await admin(redis_url, "deliveries", "replay", "--all")
    await wait_webhooks(http, edge.url, other_api_key, theirs, all_in("delivered"))
    assert {r.json()["job_id"] for r in receiver.requests} == {mine, theirs}
    assert orjson.loads(await admin(redis_url, "--json", "deliveries", "dead")) == []


async def test_replay_of_an_unknown_job_fails_in_the_cli(redis, redis_url):
    argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, "deliveries", "replay", "job_1_0000000000000000p0"]
    env = {"EZT_REGIONS_FILE": str(REGIONS_FILE), "PATH": "/usr/bin:/bin", **partitions_env()}
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1 and "no webhook deliveries" in done.stderr

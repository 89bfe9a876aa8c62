"""Tenancy: every customer-scoped endpoint, tried across two customers.

The routes come from the edge app's own router, so a route added later
fails :func:`test_every_route_is_classified` until it is listed here as
customer-scoped (with a cross-tenant check) or as not scoped.

Two customers: acme (``api_key``) owns a finished job with a dead-lettered
webhook and webhook secrets; globex (``other_api_key``) tries to reach them
through every route. Another customer's job id is answered exactly like an
id that does not exist (404 ``not_found``), never 403.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from ezthrottle_server.edge.app import create_app
from integration.delivery.helpers import FAST, all_in, closed_port, wait_webhooks
from support.jobs import auth, get_job, submit
from support.services import RunningApp, make_settings

# Routes that carry no customer's data (no key needed, or operator-level).
NOT_SCOPED = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/regions"),  # region health and edge URLs: the same for everyone
}

# Customer-scoped routes (method, path). Each has a cross-tenant check below.
SCOPED = {
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/batch"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/events"),
    ("POST", "/api/v1/jobs/{job_id}/frugal-claims/{step_id}"),
    ("GET", "/api/v1/usage"),
    ("POST", "/api/v1/webhook-secrets"),
    ("GET", "/api/v1/webhook-secrets"),
    ("DELETE", "/api/v1/webhook-secrets"),
    ("POST", "/api/v1/webhook-secrets/rotate"),
    ("GET", "/api/v1/deliveries/dead"),
    ("POST", "/api/v1/deliveries/dead/{job_id}/replay"),
    ("POST", "/api/v1/deliveries/dead/replay"),
    ("GET", "/api/v1/deliveries/dead/replay/{replay_id}"),
    ("POST", "/api/v1/proxy"),
    ("DELETE", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/jobs/cancel"),
    ("GET", "/api/v1/jobs/cancel/{action_id}"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/domains/{host}"),
    ("GET", "/api/v1/flow-control/{key}"),
    ("POST", "/api/v1/flow-control/{key}/pause"),
    ("POST", "/api/v1/flow-control/{key}/resume"),
    ("POST", "/api/v1/schedules"),
    ("GET", "/api/v1/schedules"),
    ("GET", "/api/v1/schedules/{schedule_id}"),
    ("PATCH", "/api/v1/schedules/{schedule_id}"),
    ("DELETE", "/api/v1/schedules/{schedule_id}"),
}

# The console (edge/console/): signed in by a cookie, not the Authorization header. Open to anyone:
CONSOLE_OPEN = {
    ("GET", "/console"),
    ("GET", "/console/signin"),
    ("POST", "/console/signin"),
    ("GET", "/console/static"),
}
# ... and the viewer's own data only, or the operator's (test_console_routes_are_per_customer):
CONSOLE_SCOPED = {
    ("POST", "/console/signout"),
    ("GET", "/console/jobs"),
    ("GET", "/console/jobs/statuses"),
    ("GET", "/console/jobs/live"),
    ("GET", "/console/jobs/{job_id}"),
    ("GET", "/console/jobs/{job_id}/events"),
    ("POST", "/console/jobs/{job_id}/cancel"),
    ("GET", "/console/domains"),
    ("GET", "/console/dead"),
    ("POST", "/console/dead/replay"),
    ("POST", "/console/dead/{job_id}/replay"),
    ("GET", "/console/schedules"),
    ("GET", "/console/usage"),
    ("GET", "/console/secrets"),
    ("POST", "/console/secrets/rotate"),
    ("GET", "/console/regions"),  # the operator's
    ("GET", "/console/customers"),  # the operator's
}
CONSOLE = CONSOLE_OPEN | CONSOLE_SCOPED

ACME_SECRET = "acme-primary-secret-0001"
GLOBEX_SECRET = "globex-primary-secret-01"
UNKNOWN_JOB = "job_1700000000000_0123456789abcdefp0"


def edge_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the edge app; HEAD is the GET's twin."""
    app = create_app(make_settings("edge", "redis://127.0.0.1:1/0", "iad"))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    assert {("GET", p) for _, p in heads} <= routes, "a HEAD route without its GET"
    return routes - heads


def test_every_route_is_classified():
    routes = edge_routes()
    assert not SCOPED & NOT_SCOPED
    unlisted = routes - SCOPED - NOT_SCOPED - CONSOLE
    assert not unlisted, f"new routes: add them to SCOPED (with a cross-tenant check) or NOT_SCOPED: {sorted(unlisted)}"
    gone = (SCOPED | NOT_SCOPED | CONSOLE) - routes
    assert not gone, f"routes listed here that the edge no longer serves: {sorted(gone)}"


def fill(path: str, job_id: str) -> str:
    filled = path.replace("{job_id}", job_id).replace("{step_id}", f"{job_id}:on_success").replace("{host}", "api.example.com")
    return (
        filled.replace("{key}", "acct-1")
        .replace("{schedule_id}", UNKNOWN_SCHEDULE)
        .replace("{replay_id}", "rpl_" + "0" * 24)
        .replace("{action_id}", "cnl_" + "0" * 24)
    )


UNKNOWN_SCHEDULE = "sch_" + "0" * 24


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    headers = auth(key) if key else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["data"] = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    async with http.request(method, url, **kwargs) as resp:
        raw = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, (orjson.loads(raw) if raw and ctype.startswith("application/json") else raw)


@pytest_asyncio.fixture
async def edge(start_edge) -> RunningApp:
    """The edge leaves every webhook POST to the delivery service and its FAST backoffs: ``world``'s dead webhook is
    dead well under a second after its job, not after the edge's first failed POST and a retry 5-10 s later."""
    return await start_edge("iad", edge_delivers_webhooks=False)


@pytest_asyncio.fixture
async def world(http, edge, redis, redis_url, api_key, other_api_key, target) -> AsyncIterator[dict[str, Any]]:
    """acme's finished job with a dead webhook, and acme's webhook secrets."""
    from ezthrottle_server.delivery.app import create_app as create_delivery

    settings = make_settings("delivery", redis_url, **{**FAST, "delivery_window_s": 0.3, "node_id": "delivery-tenancy"})
    delivery = await RunningApp(create_delivery(settings, stop_grace_s=1.0), settings).start()
    try:
        status, _ = await call(http, "POST", f"{edge.url}/api/v1/webhook-secrets", api_key, {"primary_secret": ACME_SECRET})
        assert status == 200
        payload = {
            "url": f"{target.url}/echo",
            "idempotent_key": "shared-key",
            "webhooks": [{"url": f"http://127.0.0.1:{closed_port()}/hook"}],
        }
        job = await submit(http, edge.url, api_key, payload)
        await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("dead"), timeout_s=30)
        yield {"job_id": job["job_id"], "payload": payload}
    finally:
        await delivery.stop()


@pytest.mark.asyncio
async def test_no_scoped_route_answers_without_a_key(http, edge, world):
    for method, path in sorted(SCOPED):
        status, body = await call(http, method, edge.url + fill(path, world["job_id"]), None, {} if method == "POST" else None)
        assert status == 401 and body["error"]["code"] == "unauthorized", (method, path, status, body)


@pytest.mark.asyncio
async def test_another_customers_job_id_is_404_on_every_route_that_takes_one(http, edge, world, api_key, other_api_key):
    mine = world["job_id"]
    with_ids = sorted((m, p) for m, p in SCOPED if "{job_id}" in p)
    assert len(with_ids) == 5
    for method, path in with_ids:
        status, theirs = await call(http, method, edge.url + fill(path, mine), other_api_key)
        unknown_status, unknown = await call(http, method, edge.url + fill(path, UNKNOWN_JOB), other_api_key)
        assert status == 404 and theirs["error"]["code"] == "not_found", (method, path, status, theirs)
        assert unknown_status == 404 and unknown["error"]["code"] == "not_found", (method, path, unknown)
        assert theirs["error"]["message"].replace(mine, "<id>") == unknown["error"]["message"].replace(UNKNOWN_JOB, "<id>")
        async with http.head(edge.url + fill(path, mine), headers=auth(other_api_key)) as resp:
            assert method != "GET" or resp.status == 404

    # The owner still has all of it: globex's tries changed nothing.
    assert (await get_job(http, edge.url, api_key, mine))["status"] == "success"
    async with http.get(f"{edge.url}/api/v1/jobs/{mine}/events", headers=auth(api_key)) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert b"event: snapshot" in await resp.read()
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/{mine}/frugal-claims/{mine}:on_success", api_key)
    assert status == 201 and body["status"] == "claimed"  # globex's 404 did not take the claim
    status, body = await call(http, "POST", f"{edge.url}/api/v1/deliveries/dead/{mine}/replay", api_key)
    assert status == 200 and body["replayed"] == 1


@pytest.mark.asyncio
async def test_jobs_and_idempotent_keys_are_per_customer(http, edge, world, api_key, other_api_key):
    # The same payload and idempotent key from another customer is a new job, not acme's duplicate.
    status, theirs = await call(http, "POST", f"{edge.url}/api/v1/jobs", other_api_key, world["payload"])
    assert status == 201 and theirs["status"] == "queued" and theirs["job_id"] != world["job_id"]
    status, again = await call(http, "POST", f"{edge.url}/api/v1/jobs", api_key, world["payload"])
    assert status == 200 and again["status"] == "duplicate" and again["job_id"] == world["job_id"]
    assert (await call(http, "GET", f"{edge.url}/api/v1/jobs/{theirs['job_id']}", api_key))[0] == 404
    # The same through a batch: the key is the caller's, whichever route brings it.
    batch = {"jobs": [world["payload"]]}
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/batch", other_api_key, batch)
    assert status == 200 and body["jobs"][0]["status"] == "duplicate" and body["jobs"][0]["job_id"] == theirs["job_id"], body
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/batch", api_key, batch)
    assert status == 200 and body["jobs"][0]["status"] == "duplicate" and body["jobs"][0]["job_id"] == world["job_id"], body
    fresh = {"jobs": [{**world["payload"], "idempotent_key": "k2"}]}
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/batch", other_api_key, fresh)
    assert status == 200 and body["jobs"][0]["status"] == "queued", body
    assert (await call(http, "GET", f"{edge.url}/api/v1/jobs/{body['jobs'][0]['job_id']}", api_key))[0] == 404


@pytest.mark.asyncio
async def test_usage_is_per_customer(http, edge, world, api_key, other_api_key):
    _, acme = await call(http, "GET", f"{edge.url}/api/v1/usage", api_key)
    _, globex = await call(http, "GET", f"{edge.url}/api/v1/usage", other_api_key)
    assert acme["customer_id"] == "acme" and acme["count"] == 1
    assert globex["customer_id"] == "globex" and globex["count"] == 0


@pytest.mark.asyncio
async def test_webhook_secrets_are_per_customer(http, edge, world, api_key, other_api_key):
    secrets = f"{edge.url}/api/v1/webhook-secrets"
    status, body = await call(http, "GET", secrets, other_api_key)
    assert status == 404 and body["error"]["code"] == "not_found"  # acme's secret is not globex's
    status, body = await call(http, "POST", secrets, other_api_key, {"primary_secret": GLOBEX_SECRET})
    assert status == 200 and body["customer_id"] == "globex"
    _, acme = await call(http, "GET", secrets, api_key)
    assert acme["customer_id"] == "acme" and acme["primary_secret"] == "ac****01"
    status, _ = await call(http, "DELETE", secrets, other_api_key)
    assert status == 200
    _, acme = await call(http, "GET", secrets, api_key)
    assert acme["primary_secret"] == "ac****01"  # globex's DELETE removed only its own
    assert (await call(http, "GET", secrets, other_api_key))[0] == 404
    status, body = await call(http, "POST", f"{secrets}/rotate", other_api_key, {"new_secret": GLOBEX_SECRET})
    assert status == 200 and body["customer_id"] == "globex" and body["secondary_secret"] is None  # not acme's
    _, acme = await call(http, "GET", secrets, api_key)
    assert (acme["primary_secret"], acme["has_secondary"]) == ("ac****01", False)  # globex's rotation left acme alone


@pytest.mark.asyncio
async def test_dead_letters_are_per_customer(http, edge, world, api_key, other_api_key):
    _, acme = await call(http, "GET", f"{edge.url}/api/v1/deliveries/dead", api_key)
    _, globex = await call(http, "GET", f"{edge.url}/api/v1/deliveries/dead", other_api_key)
    assert [e["job_id"] for e in acme["dead"]] == [world["job_id"]]
    assert globex == {"dead": [], "count": 0}
    # globex's bulk replays match none of acme's, by id or by time; its run is not acme's to read, nor acme's globex's
    for body in ({"job_ids": [world["job_id"]]}, {}, {"dead_after": 0}):
        status, run = await call(http, "POST", f"{edge.url}/api/v1/deliveries/dead/replay", other_api_key, body)
        assert status == 200 and (run["matched"], run["state"]) == (0, "done"), (body, run)
    status, theirs = await call(http, "GET", f"{edge.url}/api/v1/deliveries/dead/replay/{run['replay_id']}", api_key)
    assert status == 404 and theirs["error"]["code"] == "not_found"
    _, still = await call(http, "GET", f"{edge.url}/api/v1/deliveries/dead", api_key)
    assert [e["job_id"] for e in still["dead"]] == [world["job_id"]]


@pytest.mark.asyncio
async def test_the_proxy_serves_the_caller_only(http, edge, world, api_key, other_api_key):
    proxy = f"{edge.url}/api/v1/proxy"

    def envelope(method: str, path: str, body: Any = None) -> dict[str, Any]:
        return {
            "target_url": f"https://edge.example{path}",
            "method": method,
            "headers": {},
            "body": orjson.dumps(body).decode() if body else "",
        }

    status, body = await call(http, "POST", proxy, other_api_key, envelope("GET", f"/api/v1/jobs/{world['job_id']}"))
    assert status == 200 and body["forwarded_response"]["status_code"] == 404
    # An Authorization header inside the envelope is not the caller's key: it is ignored.
    sneaky = envelope("GET", f"/api/v1/jobs/{world['job_id']}")
    sneaky["headers"] = {"Authorization": f"Bearer {api_key}"}
    status, body = await call(http, "POST", proxy, other_api_key, sneaky)
    assert status == 200 and body["forwarded_response"]["status_code"] == 404
    status, body = await call(http, "POST", proxy, other_api_key, envelope("GET", "/api/v1/webhook-secrets"))
    assert body["forwarded_response"]["status_code"] == 404
    status, body = await call(http, "POST", proxy, other_api_key, envelope("POST", "/api/v1/jobs", world["payload"]))
    forwarded = orjson.loads(body["forwarded_response"]["body"])
    assert body["forwarded_response"]["status_code"] == 201 and forwarded["job_id"] != world["job_id"]
    status, body = await call(http, "POST", proxy, api_key, envelope("GET", f"/api/v1/jobs/{world['job_id']}"))
    assert body["forwarded_response"]["status_code"] == 200


@pytest.mark.asyncio
async def test_job_lists_and_domain_views_are_per_customer(http, edge, world, api_key, other_api_key):
    mine = world["job_id"]
    tomorrow = int(time.time() * 1000) + 86_400_000  # scheduled: never sent while the test runs
    later = await submit(http, edge.url, api_key, {"url": "https://api.example.com/later", "retry_at": tomorrow, "metadata": {"o": "1"}})
    theirs = await submit(http, edge.url, other_api_key, {"url": "https://api.example.com/theirs", "retry_at": tomorrow})
    _, acme = await call(http, "GET", f"{edge.url}/api/v1/jobs", api_key)
    _, globex = await call(http, "GET", f"{edge.url}/api/v1/jobs", other_api_key)
    assert [j["job_id"] for j in acme["jobs"]] == [later["job_id"], mine]
    assert [j["job_id"] for j in globex["jobs"]] == [theirs["job_id"]]
    # No filter reaches across: a workflow root, a metadata value or a cursor of acme's lists nothing of acme's for globex.
    for query in (f"root_job_id={mine}", "metadata.o=1", "domain=api.example.com", "status=scheduled"):
        _, found = await call(http, "GET", f"{edge.url}/api/v1/jobs?{query}", other_api_key)
        assert mine not in str(found) and later["job_id"] not in str(found), (query, found)
    _, page = await call(http, "GET", f"{edge.url}/api/v1/jobs?limit=1", api_key)
    _, after = await call(http, "GET", f"{edge.url}/api/v1/jobs?cursor={page['next_cursor']}", other_api_key)
    assert after == {"jobs": [], "next_cursor": None}  # a cursor is a position in one's own list, nothing more
    # A domain shows each customer its own jobs there: acme's scheduled job is acme's alone.
    _, acme_view = await call(http, "GET", f"{edge.url}/api/v1/domains/api.example.com", api_key)
    _, globex_view = await call(http, "GET", f"{edge.url}/api/v1/domains/api.example.com:443", other_api_key)
    assert acme_view["domain"] == globex_view["domain"] == "api.example.com:443"
    assert (acme_view["jobs"]["queued"], globex_view["jobs"]["queued"]) == (1, 1)


@pytest.mark.asyncio
async def test_cancels_reach_only_the_callers_jobs(http, edge, world, api_key, other_api_key):
    tomorrow = int(time.time() * 1000) + 86_400_000  # scheduled: never sent while the test runs
    waiting = await submit(http, edge.url, api_key, {"url": "https://api.example.com/wait", "retry_at": tomorrow})
    status, body = await call(http, "DELETE", f"{edge.url}/api/v1/jobs/{waiting['job_id']}", other_api_key)
    assert status == 404 and body["error"]["code"] == "not_found"
    both = {"job_ids": [waiting["job_id"], world["job_id"]]}
    status, body = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", other_api_key, both)
    assert status == 200 and body["counts"]["not_found"] == 2 and body["counts"]["cancelled"] == 0, body
    assert (await get_job(http, edge.url, api_key, waiting["job_id"]))["status"] == "scheduled"
    # A filter reaches the caller's own jobs only, and a bulk action is its caller's alone to read.
    status, theirs = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", other_api_key, {"filter": {"domain": "api.example.com"}})
    assert status == 200 and (theirs["matched"], theirs["cancelled"], theirs["jobs"]) == (0, 0, {}), theirs
    status, body = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{theirs['action_id']}", api_key)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, mine = await call(http, "POST", f"{edge.url}/api/v1/jobs/cancel", api_key, {"filter": {"domain": "api.example.com"}})
    assert status == 200 and mine["jobs"] == {waiting["job_id"]: "cancelled"}, mine
    status, body = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{mine['action_id']}", other_api_key)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await call(http, "GET", f"{edge.url}/api/v1/jobs/cancel/{mine['action_id']}", api_key)
    assert status == 200 and (body["state"], body["cancelled"]) == ("done", 1), body
    status, body = await call(http, "DELETE", f"{edge.url}/api/v1/jobs/{waiting['job_id']}", api_key)
    assert status == 409 and body["error"]["code"] == "already_final"


@pytest.mark.asyncio
async def test_flow_control_keys_are_per_customer(http, edge, world, api_key, other_api_key):
    payload = {**world["payload"], "idempotent_key": "flow-1", "flow_control": {"key": "acct-1", "rate": 5}}
    status, job = await call(http, "POST", f"{edge.url}/api/v1/jobs", api_key, payload)
    assert status == 201, job
    async with asyncio.timeout(10):
        while (await call(http, "GET", f"{edge.url}/api/v1/flow-control/acct-1", api_key))[0] != 200:
            await asyncio.sleep(0.05)  # the key exists once a job of it is sent
    for method, path in sorted((m, p) for m, p in SCOPED if "{key}" in p):
        status, theirs = await call(http, method, edge.url + fill(path, ""), other_api_key)
        assert status == 404 and theirs["error"]["code"] == "not_found", (method, path, status, theirs)
    status, mine = await call(http, "GET", f"{edge.url}/api/v1/flow-control/acct-1", api_key)
    assert status == 200 and mine["key"] == "acct-1" and mine["paused"] is False  # globex's tries changed nothing


async def _console_sign_in(base: str, key: str) -> tuple[aiohttp.ClientSession, str]:
    """A console session (cookies kept for 127.0.0.1, as a browser does) and its CSRF token."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(f"{base}/console/signin") as resp:
        token = re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)
    async with session.post(f"{base}/console/signin", data={"secret": key, "csrf": token}) as resp:
        assert resp.status == 200 and resp.url.path == "/console/jobs"
        return session, re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)


@pytest.mark.asyncio
async def test_console_routes_are_per_customer(http, edge, world, api_key, other_api_key):
    mine = world["job_id"]
    async with aiohttp.ClientSession() as anonymous:  # signed out: sent to the sign-in page, or 401
        for method, path in sorted(CONSOLE_SCOPED):
            async with anonymous.request(method, edge.url + fill(path, mine), allow_redirects=False) as resp:
                assert resp.status in (303, 401, 403), (method, path, resp.status)
                assert resp.status != 303 or resp.headers["Location"] == "/console/signin"
    globex, csrf = await _console_sign_in(edge.url, other_api_key)
    async with globex:
        with_ids = sorted((m, p) for m, p in CONSOLE_SCOPED if "{job_id}" in p)
        assert len(with_ids) == 4
        for method, path in with_ids:
            data = {"csrf": csrf} if method == "POST" else None
            async with globex.request(method, edge.url + fill(path, mine), data=data, allow_redirects=False) as resp:
                theirs = (resp.status, await resp.text())
            async with globex.request(method, edge.url + fill(path, UNKNOWN_JOB), data=data, allow_redirects=False) as resp:
                unknown = (resp.status, await resp.text())
            assert theirs[0] == 404 and theirs[0] == unknown[0], (method, path, theirs, unknown)
            assert theirs[1].replace(mine, "<id>") == unknown[1].replace(UNKNOWN_JOB, "<id>")  # exactly as unknown
        for method, path in sorted(CONSOLE_SCOPED - set(with_ids)):
            data = {"csrf": csrf, "q": "", "new_secret": GLOBEX_SECRET} if method == "POST" and "signout" not in path else None
            async with globex.request(method, edge.url + fill(path, mine), data=data) as resp:
                body = await resp.text()
            assert mine not in body and ACME_SECRET[:2] + "****" not in body, (method, path)
            if path in ("/console/regions", "/console/customers"):
                assert resp.status == 404, path  # the operator's pages
        async with globex.get(f"{edge.url}/console/jobs/statuses?ids={mine}") as resp:
            assert await resp.json() == {}
    # acme's dead letter was not replayed by globex's "replay all": acme still sees it, and replays it itself
    acme, acme_csrf = await _console_sign_in(edge.url, api_key)
    async with acme:
        async with acme.get(f"{edge.url}/console/dead") as resp:
            assert mine in await resp.text()
        async with acme.post(f"{edge.url}/console/dead/{mine}/replay", data={"csrf": acme_csrf}) as resp:
            assert resp.status == 200 and "Replayed 1 webhook(s)" in await resp.text()
        async with acme.get(f"{edge.url}/console/jobs/{mine}") as resp:
            assert resp.status == 200 and mine in await resp.text()


@pytest.mark.asyncio
async def test_schedules_are_per_customer(http, edge, world, api_key, other_api_key):
    body = {"every_s": 3600, "job": world["payload"] | {"idempotent_key": None}}
    status, mine = await call(http, "POST", f"{edge.url}/api/v1/schedules", api_key, body)
    assert status == 201, mine
    sid = mine["schedule_id"]
    for method, path in sorted((m, p) for m, p in SCOPED if "{schedule_id}" in p):
        url = edge.url + path.replace("{schedule_id}", sid)
        status, theirs = await call(http, method, url, other_api_key, {"paused": True} if method == "PATCH" else None)
        assert status == 404 and theirs["error"]["code"] == "not_found", (method, path, status, theirs)
    status, listed = await call(http, "GET", f"{edge.url}/api/v1/schedules", other_api_key)
    assert status == 200 and listed == {"schedules": []}
    status, still = await call(http, "GET", f"{edge.url}/api/v1/schedules/{sid}", api_key)
    assert status == 200 and still["paused"] is False  # globex's tries changed nothing

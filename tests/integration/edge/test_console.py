"""The console's server side (GET /console): sign-in, cookies, CSRF, headers, pages, tenancy.

The browser tests (tests/e2e/test_console.py) drive the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from support.jobs import submit, wait_final

pytestmark = pytest.mark.asyncio

OPERATOR_TOKEN = "operator-token-for-tests-0001"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest_asyncio.fixture
async def console_edge(start_edge):
    return await start_edge("iad", operator_token=OPERATOR_TOKEN, auth_fail_limit=5)


def browser() -> aiohttp.ClientSession:
    # a cookie jar that keeps cookies of 127.0.0.1 (unsafe=True), as a browser does
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(session: aiohttp.ClientSession, base: str, secret: str) -> aiohttp.ClientResponse:
    async with session.get(f"{base}/console/signin") as resp:
        token = CSRF.search(await resp.text()).group(1)
    resp = await session.post(f"{base}/console/signin", data={"secret": secret, "csrf": token}, allow_redirects=False)
    await resp.read()
    return resp


@pytest_asyncio.fixture
async def acme(console_edge, api_key) -> AsyncIterator[aiohttp.ClientSession]:
    async with browser() as s:
        resp = await sign_in(s, console_edge.url, api_key)
        assert resp.status == 303 and resp.headers["Location"] == "/console/jobs"
        yield s


@pytest_asyncio.fixture
async def globex(console_edge, other_api_key) -> AsyncIterator[aiohttp.ClientSession]:
    async with browser() as s:
        assert (await sign_in(s, console_edge.url, other_api_key)).status == 303
        yield s


async def page(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_sign_in_sets_a_strict_http_only_cookie_and_every_page_a_strict_csp(console_edge, api_key):
    async with browser() as s:
        async with s.get(f"{console_edge.url}/console", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/signin"
        resp = await sign_in(s, console_edge.url, api_key)
        cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("ezt_console="))
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"httponly", "samesite", "path"} <= attrs and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "secure" not in attrs  # plain http here; https (or a trusted proxy's X-Forwarded-Proto) adds it
        for path in ("/console/jobs", "/console/domains", "/console/dead", "/console/usage", "/console/secrets", "/console/signin"):
            async with s.get(console_edge.url + path) as resp:
                assert resp.status == 200, path
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
                assert resp.headers["X-Frame-Options"] == "DENY"
                body = await resp.text()
                assert "<script>" not in body and "style=" not in body and " on" + "click=" not in body
        async with s.get(f"{console_edge.url}/console/static/console.js") as resp:
            assert resp.status == 200 and "EventSource" in await resp.text()


async def test_a_trusted_proxy_saying_https_makes_the_cookie_secure(start_edge, api_key):
    edge = await start_edge("iad", trusted_proxies=("127.0.0.1/32",))
    async with browser() as s:
        async with s.get(f"{edge.url}/console/signin") as resp:
            token = CSRF.search(await resp.text()).group(1)
        async with s.post(
            f"{edge.url}/console/signin",
            data={"secret": api_key, "csrf": token},
            headers={"X-Forwarded-Proto": "https"},
            allow_redirects=False,
        ) as resp:
            cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("ezt_console="))
            assert "Secure" in cookie


async def test_sign_in_needs_its_csrf_token_and_failures_count_toward_the_limit(console_edge, api_key):
    async with browser() as s:
        async with s.post(f"{console_edge.url}/console/signin", data={"secret": api_key}, allow_redirects=False) as resp:
            assert resp.status == 403  # no token: another site's form cannot sign anyone in
        for _ in range(5):
            resp = await sign_in(s, console_edge.url, "ezt_live_wrong")
            assert resp.status == 303 and resp.headers["Location"] == "/console/signin?error=invalid"
        resp = await sign_in(s, console_edge.url, "ezt_live_wrong")
        assert resp.headers["Location"] == "/console/signin?error=limited"  # the API's limit: this address's failures wait now
        assert "ezt_console=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        _, html = await page(s, f"{console_edge.url}/console/signin?error=limited")
        assert "Too many failed sign-ins" in html
        resp = await sign_in(s, console_edge.url, api_key)
        assert resp.headers["Location"] == "/console/jobs"  # a good key is never refused by the limit
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{console_edge.url}/api/v1/usage", headers={"Authorization": "Bearer ezt_live_wrong"}) as resp:
            assert resp.status == 429  # one limit, shared with the API
        async with http.get(f"{console_edge.url}/api/v1/usage", headers={"Authorization": f"Bearer {api_key}"}) as resp:
            assert resp.status == 200


async def test_state_changing_forms_need_the_csrf_token(console_edge, acme):
    s, base = acme, console_edge.url
    async with s.post(f"{base}/console/secrets/rotate", data={"new_secret": "x" * 20}, allow_redirects=False) as resp:
        assert resp.status == 403
    async with s.post(f"{base}/console/secrets/rotate", data={"new_secret": "x" * 20, "csrf": "0" * 64}, allow_redirects=False) as resp:
        assert resp.status == 403
    _, html = await page(s, f"{base}/console/secrets")
    token = CSRF.search(html).group(1)
    async with s.post(f"{base}/console/secrets/rotate", data={"new_secret": "x" * 20, "csrf": token}) as resp:
        assert resp.status == 200 and "xx****xx" in await resp.text()
    async with s.post(f"{base}/console/signout", data={}, allow_redirects=False) as resp:
        assert resp.status == 403
    async with s.post(f"{base}/console/signout", data={"csrf": token}, allow_redirects=False) as resp:
        assert resp.status == 303
    assert (await page(s, f"{base}/console/jobs"))[0] == 303  # signed out


async def test_a_customer_sees_only_its_own_jobs(console_edge, acme, globex, http, api_key, other_api_key):
    base = console_edge.url
    tomorrow = int(time.time() * 1000) + 86_400_000
    headers = {"Authorization": "Bearer sk-live-0123", "X-Api-Key": "k-123", "Accept": "text/plain"}
    mine = (await submit(http, base, api_key, {"url": "https://api.example.com/a", "retry_at": tomorrow, "headers": headers}))["job_id"]
    theirs = (await submit(http, base, other_api_key, {"url": "https://api.example.com/b", "retry_at": tomorrow}))["job_id"]
    _, acme_list = await page(acme, f"{base}/console/jobs")
    _, globex_list = await page(globex, f"{base}/console/jobs")
    assert mine in acme_list and theirs not in acme_list
    assert theirs in globex_list and mine not in globex_list
    status, detail = await page(acme, f"{base}/console/jobs/{mine}")
    assert status == 200 and "text/plain" in detail and "sk-live-0123" not in detail and "k-123" not in detail
    for method, path in (
        ("GET", f"/console/jobs/{mine}"),
        ("GET", f"/console/jobs/{mine}/events"),
    ):
        async with globex.request(method, base + path, allow_redirects=False) as resp:
            assert resp.status == 404, path
    _, html = await page(globex, f"{base}/console/jobs")
    token = CSRF.search(html).group(1)
    for path in (f"/console/jobs/{mine}/cancel", f"/console/dead/{mine}/replay"):
        async with globex.post(base + path, data={"csrf": token}, allow_redirects=False) as resp:
            assert resp.status == 404, path
    async with globex.get(f"{base}/console/jobs/statuses?ids={mine},{theirs}") as resp:
        assert await resp.json() == {theirs: "scheduled"}
    async with globex.get(f"{base}/console/jobs/live?ids={mine},{theirs}") as resp:  # the live list: its own only
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b'event: status\ndata: {"job_id":"' + theirs.encode() + b'","status":"scheduled"}\n\n'
    for path in ("/console/regions", "/console/customers"):  # the operator's pages
        assert (await page(globex, base + path))[0] == 404
    _, domains = await page(globex, f"{base}/console/domains")
    assert "api.example.com:443" in domains


async def test_the_operator_sees_every_customer_and_the_regions(console_edge, coordinator, http, api_key, other_api_key, target):
    base = console_edge.url
    theirs = (await submit(http, base, other_api_key, {"url": f"{target.url}/ok"}))["job_id"]
    await wait_final(http, base, other_api_key, theirs)
    async with browser() as op:
        resp = await sign_in(op, base, OPERATOR_TOKEN)
        assert resp.status == 303 and resp.headers["Location"] == "/console/regions"
        status, html = await page(op, f"{base}/console/regions")
        assert status == 200 and 'data-region="iad"' in html and "Coordinator" in html
        _, html = await page(op, f"{base}/console/customers")
        assert "acme" in html and "globex" in html
        _, html = await page(op, f"{base}/console/jobs?customer=globex")
        assert theirs in html
        assert (await page(op, f"{base}/console/jobs/{theirs}"))[0] == 200
        _, html = await page(op, f"{base}/console/domains")
        assert target.url.removeprefix("http://") in html and "closed" in html  # its limit, source and circuit


async def test_a_revoked_key_signs_its_holder_out(console_edge, redis, api_key, acme):
    from ezthrottle_server.common import apikeys

    assert (await page(acme, f"{console_edge.url}/console/jobs"))[0] == 200
    assert await apikeys.revoke(redis, api_key)
    deadline = time.monotonic() + 10  # the node's key cache (api_key_cache_s) forgets it
    while (await page(acme, f"{console_edge.url}/console/jobs"))[0] == 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    async with acme.get(f"{console_edge.url}/console/jobs", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/signin"
    assert not any(c.key == "ezt_console" for c in acme.cookie_jar)  # dropped on the first refusal


async def test_the_live_list_sends_each_change_then_ends(console_edge, acme, http, api_key, target):
    base = console_edge.url
    tomorrow = int(time.time() * 1000) + 86_400_000
    waiting = (await submit(http, base, api_key, {"url": f"{target.url}/a", "retry_at": tomorrow}))["job_id"]
    async with acme.get(f"{base}/console/jobs/live?ids={waiting}") as resp:
        events = [await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)]
        async with http.delete(f"{base}/api/v1/jobs/{waiting}", headers={"Authorization": f"Bearer {api_key}"}) as cancel:
            assert cancel.status == 200
        while not events[-1].startswith(b"event: end"):
            events.append(await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10))
    assert [e.split(b"\n")[1] for e in events[:-1]] == [
        b'data: {"job_id":"' + waiting.encode() + b'","status":"scheduled"}',
        b'data: {"job_id":"' + waiting.encode() + b'","status":"cancelled"}',
    ]


async def test_schedules_are_listed_for_their_customer_only(console_edge, acme, globex, http, api_key):
    body = {"every_s": 3600, "job": {"url": "https://api.example.com/nightly"}}
    async with http.post(f"{console_edge.url}/api/v1/schedules", json=body, headers={"Authorization": f"Bearer {api_key}"}) as resp:
        assert resp.status == 201, await resp.text()
        schedule_id = (await resp.json())["schedule_id"]
    status, html = await page(acme, f"{console_edge.url}/console/schedules")
    assert status == 200 and schedule_id in html and "every 3600 s" in html and "api.example.com/nightly" in html
    status, html = await page(globex, f"{console_edge.url}/console/schedules")
    assert status == 200 and schedule_id not in html and "No schedules." in html

"""``GET /api/v1/jobs`` (list and search) and ``GET /api/v1/domains/{host}`` against a real Redis and real edges.

The listing reads each customer's per-partition index (common/job_index.py);
these tests page through hundreds of jobs over several partitions, filter them,
and check the index's upkeep (expired records, old entries, TTL).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle
from ezthrottle_server.common import job_index, keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import SHARED
from support.jobs import auth, submit, wait_final

pytestmark = pytest.mark.asyncio


def tomorrow() -> int:
    return int(time.time() * 1000) + 86_400_000  # scheduled: never sent while a test runs


async def listing(http, edge, key, query: str = "") -> tuple[int, dict[str, Any]]:
    async with http.get(f"{edge.url}/api/v1/jobs{query}", headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def all_pages(http, edge, key, query: str = "") -> tuple[list[dict[str, Any]], int]:
    """Every job a listing gives, following next_cursor; and the number of requests it took."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    requests = 0
    while True:
        sep = "&" if query else "?"
        status, page = await listing(http, edge, key, query + (f"{sep}cursor={cursor}" if cursor else ""))
        requests += 1
        assert status == 200, page
        jobs.extend(page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs, requests
        assert requests < 1000


async def submit_many(http, edge, key, payloads: list[dict[str, Any]]) -> list[str]:
    sem = asyncio.Semaphore(16)

    async def one(payload: dict[str, Any]) -> str:
        async with sem:
            return str((await submit(http, edge.url, key, payload))["job_id"])

    return list(await asyncio.gather(*(one(p) for p in payloads)))


async def test_pages_of_two_go_through_250_jobs_in_4_partitions_newest_first_each_once(http, start_edge, api_key, other_api_key):
    edge = await start_edge("iad", partitions=4)
    ids = await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(250)])
    await submit_many(http, edge, other_api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(20)])
    assert len({keys.job_partition(j) for j in ids}) == 4  # spread over every partition

    jobs, requests = await all_pages(http, edge, api_key, "?limit=2")
    assert requests == 125  # the hundredth request and those after it are as right as the first
    got = [j["job_id"] for j in jobs]
    assert sorted(got) == sorted(ids)  # each once, and no other customer's
    positions = [(j["created_at_ms"], j["job_id"]) for j in jobs]
    assert positions == sorted(positions, reverse=True)  # newest first, ties by job id
    assert {j["status"] for j in jobs} == {"scheduled"} and jobs[0]["domain"] == "api.example.com:443"

    # the same with the default page size, and one page of at most 200
    jobs, requests = await all_pages(http, edge, api_key)
    assert [j["job_id"] for j in jobs] == got and requests == 5
    status, page = await listing(http, edge, api_key, "?limit=200")
    assert status == 200 and [j["job_id"] for j in page["jobs"]] == got[:200] and page["next_cursor"]


async def test_a_page_that_ends_the_list_says_so(http, edge, api_key):
    ids = await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(4)])
    status, page = await listing(http, edge, api_key, "?limit=4")
    assert status == 200 and len(page["jobs"]) == 4 and page["next_cursor"] is None
    status, page = await listing(http, edge, api_key, "?limit=3")
    assert len(page["jobs"]) == 3 and page["next_cursor"]
    status, rest = await listing(http, edge, api_key, f"?limit=3&cursor={page['next_cursor']}")
    assert [j["job_id"] for j in rest["jobs"]] == [i for i in ids if i not in {j["job_id"] for j in page["jobs"]}]
    assert rest["next_cursor"] is None
    assert (await listing(http, edge, "ezt_live_nobody", ""))[0] == 401


async def test_filters_status_domain_time_and_metadata(http, edge, api_key, target, receiver):
    await apply_overrides(edge_redis(edge), parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    later = tomorrow()
    scheduled = await submit_many(
        http,
        edge,
        api_key,
        [
            {"url": f"{target.url}/echo?s=1", "retry_at": later, "metadata": {"order": "A-1", "attempt": 3, "vip": True}},
            {"url": f"{receiver.url}/hook?s=2", "retry_at": later, "metadata": {"order": "A-2", "attempt": 1, "vip": False}},
        ],
    )
    done = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?s=3", "metadata": {"order": "A-3"}})
    await wait_final(http, edge.url, api_key, done["job_id"])
    all_jobs, _ = await all_pages(http, edge, api_key)
    by_id = {j["job_id"]: j for j in all_jobs}
    assert set(by_id) == {*scheduled, done["job_id"]}

    async def ids(query: str) -> set[str]:
        jobs, _ = await all_pages(http, edge, api_key, query)
        return {j["job_id"] for j in jobs}

    assert await ids("?status=success") == {done["job_id"]}
    assert await ids("?status=scheduled,success") == set(by_id)
    assert await ids("?status=failed,cancelled") == set()
    assert await ids(f"?domain={domain_of(target.url)}") == {scheduled[0], done["job_id"]}
    assert await ids(f"?domain={receiver.url.removeprefix('http://')}") == {scheduled[1]}
    assert await ids("?metadata.order=A-2") == {scheduled[1]}
    assert await ids("?metadata.attempt=3&metadata.vip=true") == {scheduled[0]}
    assert await ids("?metadata.vip=false") == {scheduled[1]}
    assert await ids("?metadata.attempt=3&status=success") == set()
    assert await ids("?metadata.missing=x") == set()
    newest = max(by_id.values(), key=lambda j: (j["created_at_ms"], j["job_id"]))
    oldest = min(by_id.values(), key=lambda j: (j["created_at_ms"], j["job_id"]))
    assert await ids(f"?created_after={oldest['created_at_ms'] - 1}") == set(by_id)
    assert await ids(f"?created_before={newest['created_at_ms'] + 1}&created_after=0") == set(by_id)
    assert newest["job_id"] not in await ids(f"?created_before={newest['created_at_ms']}")  # exclusive
    assert oldest["job_id"] not in await ids(f"?created_after={oldest['created_at_ms']}")
    view = by_id[done["job_id"]]
    assert view["status"] == "success" and view["metadata"] == {"order": "A-3"} and view["finished_at_ms"] >= view["created_at_ms"]
    assert view["url"] == f"{target.url}/echo?s=3" and view["method"] == "GET" and view["workflow"] is None


def edge_redis(edge: Any) -> Any:
    from ezthrottle_server.edge.context import CTX

    return edge.app[CTX].redis


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=queued,", "status"),
        ("domain=a/b", "domain"),
        ("domain=", "domain"),
        ("created_after=yesterday", "created_after"),
        ("created_before=-5", "created_before"),
        ("created_after=%C2%B2", "created_after"),
        ("root_job_id=job_1", "root_job_id"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=1&limit=2", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=" + job_index.encode_cursor("not a position"), "cursor"),
        ("metadata.=x", "metadata."),
        ("colour=red", "colour"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_the_parameter(http, edge, api_key, query, field):
    status, body = await listing(http, edge, api_key, "?" + query)
    assert status == 400 and body["error"]["field"] == field, body
    assert body["error"]["code"] in ("invalid_field", "unknown_field") and field.rstrip(".") in body["error"]["message"]


async def test_a_selective_filter_reads_a_bounded_number_of_jobs_per_request_and_goes_on(http, edge, api_key):
    needle = await submit(
        http, edge.url, api_key, {"url": "https://api.example.com/needle", "retry_at": tomorrow(), "metadata": {"k": "needle"}}
    )
    await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(450)])
    status, first = await listing(http, edge, api_key, "?metadata.k=needle&limit=1")
    assert status == 200 and first["jobs"] == [] and first["next_cursor"]  # 200 read (10 x max(limit, 20)), none matched
    jobs, requests = await all_pages(http, edge, api_key, "?metadata.k=needle&limit=1")
    assert [j["job_id"] for j in jobs] == [needle["job_id"]] and requests == 3
    # a filter the index answers alone (domain) reads no records for the others
    jobs, requests = await all_pages(http, edge, api_key, "?domain=api.example.com&limit=200")
    assert len(jobs) == 451 and requests == 3


async def test_a_workflow_lists_its_root_and_every_job_below_it(http, edge, coordinator, api_key, target):
    await apply_overrides(edge_redis(edge), parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 100, max_concurrent: 20}}\n"))
    other = await submit(http, edge.url, api_key, {"url": f"{target.url}/echo?other"})
    root = await submit(
        http,
        edge.url,
        api_key,
        {
            "url": f"{target.url}/status/500",
            "retry_policy": {"max_retries": 0, "max_reroutes": 0},
            "fallback_job": {"url": f"{target.url}/echo?fallback", "trigger": {"type": "on_error", "codes": [500]}},
            "on_success": {"url": f"{target.url}/echo?next"},
        },
    )
    deadline = time.monotonic() + 15
    while True:
        jobs, _ = await all_pages(http, edge, api_key, f"?root_job_id={root['job_id']}")
        if len(jobs) >= 2 and all(j["status"] in ("success", "failed") for j in jobs):
            break
        assert time.monotonic() < deadline, jobs
        await asyncio.sleep(0.05)
    assert jobs[-1]["job_id"] == root["job_id"] and other["job_id"] not in {j["job_id"] for j in jobs}
    children = jobs[:-1]
    assert all(j["workflow"]["root_job_id"] == root["job_id"] for j in jobs)
    assert {j["workflow"]["relation"] for j in children} <= {"fallback", "on_success"} and "fallback" in {
        j["workflow"]["relation"] for j in children
    }
    assert all(keys.job_partition(j["job_id"]) == keys.job_partition(root["job_id"]) for j in jobs)  # children live in the root's partition


async def test_an_expired_record_drops_its_entry_and_old_entries_go_on_the_next_write(http, edge, api_key, redis):
    gone = await submit(http, edge.url, api_key, {"url": "https://api.example.com/gone", "retry_at": tomorrow()})
    kept = await submit(http, edge.url, api_key, {"url": "https://api.example.com/kept", "retry_at": tomorrow()})
    p = keys.job_partition(gone["job_id"])
    index = keys.job_index(p, "acme")
    ttl = job_index.ttl_s(edge.settings)
    assert ttl - 5 <= await redis.ttl(index) <= ttl
    await redis.delete(keys.job(gone["job_id"]))  # as its TTL would
    _, page = await listing(http, edge, api_key)
    assert [j["job_id"] for j in page["jobs"]] == [kept["job_id"]]
    assert gone["job_id"] not in str(await redis.zrange(index, 0, -1))  # the listing dropped its entry
    kept_index = keys.job_index(keys.job_partition(kept["job_id"]), "acme")
    assert [m.split("|")[1] for m in await redis.zrange(kept_index, 0, -1)] == [kept["job_id"]]

    ancient = job_index.member(int(time.time() * 1000) - ttl * 1000 - 1000, "job_1000000000000_0123456789abcdefp0", "x:443")
    await redis.zadd(index, {ancient: 0})
    await redis.expire(index, 10)
    await submit(http, edge.url, api_key, {"url": "https://api.example.com/next", "retry_at": tomorrow()})
    assert ancient not in await redis.zrange(index, 0, -1)  # older than any live job: trimmed by the write
    assert await redis.ttl(index) > ttl - 5  # and the TTL renewed


async def test_a_domain_shows_its_limit_pause_and_this_customers_jobs_there(http, start_edge, api_key, other_api_key, redis):
    edge = await start_edge("iad", partitions=4, executor_concurrency=0)  # nothing is sent: jobs wait
    await apply_overrides(redis, parse_overrides("domains:\n  api.example.com:443: {rps: 7}\n"))
    await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/{i}"} for i in range(5)])
    await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/later/{i}", "retry_at": tomorrow()} for i in range(3)])
    await submit_many(http, edge, api_key, [{"url": f"https://other.example.com/{i}"} for i in range(4)])
    await submit_many(http, edge, other_api_key, [{"url": f"https://api.example.com/{i}"} for i in range(2)])

    async def view(host: str, key: str = api_key) -> tuple[int, dict[str, Any]]:
        async with http.get(f"{edge.url}/api/v1/domains/{host}", headers=auth(key)) as resp:
            return resp.status, await resp.json()

    status, dom = await view("api.example.com")
    assert status == 200, dom
    assert dom["domain"] == "api.example.com:443"
    assert dom["limit"] == {
        "scope": "shared",
        "rps": 7.0,
        "rps_source": "config",
        "max_concurrent": 2,
        "max_concurrent_source": "default",
        "burst": 1,
    }
    assert dom["jobs"] == {"queued": 8, "in_flight": 0, "complete": True}
    assert (dom["paused"], dom["paused_until_ms"], dom["flow_control_keys"]) == (False, None, [])
    assert dom["circuit"] == {"state": "closed", "open_until_ms": None}
    assert (await view("API.example.com:443"))[1]["jobs"]["queued"] == 8
    assert (await view("api.example.com", other_api_key))[1]["jobs"]["queued"] == 2
    assert (await view("nobody.example.com:8443"))[1]["jobs"] == {"queued": 0, "in_flight": 0, "complete": True}

    until = int(time.time() * 1000) + 60_000
    await redis.hset(keys.pacing_limit("api.example.com:443", SHARED), "pause_until", until)  # as a Retry-After does
    _, dom = await view("api.example.com")
    assert dom["paused"] is True and abs(dom["paused_until_ms"] - until) <= 1
    for bad in ("a%7Cb", "host:99999", "%20"):
        status, body = await view(bad)
        assert status == 400 and body["error"]["field"] == "host", (bad, body)


async def test_the_sdk_iterates_every_page_sync_and_async(http, edge, api_key):
    ids = await submit_many(
        http,
        edge,
        api_key,
        [
            {"url": f"https://api.example.com/{i}", "retry_at": tomorrow(), "metadata": {"batch": "b1" if i % 2 else "b2"}}
            for i in range(25)
        ],
    )
    async with AsyncEZThrottle(api_key=api_key, base_url=edge.url) as client:
        got = [j["job_id"] async for j in client.list_jobs(limit=4)]
        odd = [
            j["job_id"] async for j in client.list_jobs(metadata={"batch": "b1"}, status=["scheduled"], domain="api.example.com", limit=3)
        ]
    assert sorted(got) == sorted(ids) and len(got) == 25
    assert sorted(odd) == sorted(ids[1::2])

    def sync_list() -> list[str]:
        with EZThrottle(api_key=api_key, base_url=edge.url) as client:
            return [j["job_id"] for j in client.list_jobs(limit=7, created_after=0)]

    assert await asyncio.to_thread(sync_list) == got


async def test_the_sdk_shows_a_domain(http, edge, api_key):
    await submit(http, edge.url, api_key, {"url": "https://api.example.com/x", "retry_at": tomorrow()})
    async with AsyncEZThrottle(api_key=api_key, base_url=edge.url) as client:
        view = await client.get_domain("api.example.com")
    assert view["domain"] == "api.example.com:443" and view["jobs"]["queued"] == 1 and view["flow_control_keys"] == []


async def test_reindex_adds_the_jobs_the_index_lacks_once(http, start_edge, api_key, other_api_key, redis, redis_url):
    edge = await start_edge("iad", partitions=4)
    mine = await submit_many(http, edge, api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(12)])
    theirs = await submit_many(
        http, edge, other_api_key, [{"url": f"https://api.example.com/{i}", "retry_at": tomorrow()} for i in range(3)]
    )
    before, _ = await all_pages(http, edge, api_key)
    for p in range(4):  # as if they were accepted before the index existed
        await redis.delete(keys.job_index(p, "acme"), keys.job_index(p, "globex"))
    assert (await listing(http, edge, api_key))[1] == {"jobs": [], "next_cursor": None}
    assert await job_index.reindex(redis, edge.settings, batch=5) == 15
    assert await job_index.reindex(redis, edge.settings) == 0  # once
    after, _ = await all_pages(http, edge, api_key)
    assert after == before and sorted(j["job_id"] for j in after) == sorted(mine)
    assert sorted(j["job_id"] for j in (await all_pages(http, edge, other_api_key))[0]) == sorted(theirs)
    index = keys.job_index(keys.job_partition(mine[0]), "acme")
    assert await redis.ttl(index) > job_index.ttl_s(edge.settings) - 5

    # the operator's command does the same
    await redis.delete(index)
    argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, "--json", "jobs", "reindex"]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"added": len([m for m in mine if keys.job_partition(m) == keys.job_partition(mine[0])])}
    assert (await all_pages(http, edge, api_key))[0] == before


async def test_a_domain_kept_per_customer_shows_each_customer_its_own_limit(http, edge, api_key, other_api_key, redis):
    await apply_overrides(redis, parse_overrides("domains:\n  per.example.com:443: {per_customer: true, rps: 3}\n"))
    # globex's scope of the domain learned a limit from the target's headers; acme's did not
    await redis.hset(keys.pacing_limit("per.example.com:443", "globex"), mapping={"hdr_rps": 9, "hdr_rps_ms": int(time.time() * 1000)})
    views = {}
    for key in (api_key, other_api_key):
        async with http.get(f"{edge.url}/api/v1/domains/per.example.com", headers=auth(key)) as resp:
            views[key] = (await resp.json())["limit"]
    assert views[api_key]["scope"] == views[other_api_key]["scope"] == "customer"
    assert (views[api_key]["rps"], views[api_key]["rps_source"]) == (3.0, "config")
    assert (views[other_api_key]["rps"], views[other_api_key]["rps_source"]) == (9.0, "header")

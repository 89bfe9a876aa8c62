"""Operators: domains.yaml applied without a restart; `ezthrottle-admin domains`."""

import asyncio
import os
import signal
import subprocess
import sys

import orjson
import pytest
from prometheus_client import REGISTRY

from ezthrottle_server.common import keys
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from integration.pacing.pacing_helpers import overrides_applied, submit_many
from support.jobs import wait_final
from support.services import REPO

pytestmark = pytest.mark.asyncio


async def admin(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZT_")}
    env["EZT_REGIONS_FILE"] = str(REPO / "regions.yaml")
    argv = [sys.executable, "-m", "ezthrottle_server.admin", "--redis-url", redis_url, *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30, env=env)


async def test_the_coordinator_applies_domains_yaml_when_it_changes(redis, domains_coordinator):
    _app, path = domains_coordinator
    path.write_text("domains:\n  api.example: {rps: 5, max_concurrent: 3}\n  b.example:8080: {per_customer: true}\n")
    await overrides_applied(redis, "api.example:443", "rps", "5.0")
    assert await redis.hgetall(keys.pacing_conf("b.example:8080")) == {"per_customer": "1"}

    errors = REGISTRY.get_sample_value("ezt_pacing_config_loads_total", {"result": "error"}) or 0
    path.write_text("domains:\n  api.example: {rps: -1}\n")  # refused whole
    deadline = asyncio.get_running_loop().time() + 5
    while (REGISTRY.get_sample_value("ezt_pacing_config_loads_total", {"result": "error"}) or 0) == errors:
        assert asyncio.get_running_loop().time() < deadline, "the invalid file was not looked at"
        await asyncio.sleep(0.05)
    assert await redis.hget(keys.pacing_conf("api.example:443"), "rps") == "5.0"  # previous overrides stay

    path.write_text("domains:\n  api.example: {rps: 7}\n")
    await overrides_applied(redis, "api.example:443", "rps", "7.0")
    assert not await redis.exists(keys.pacing_conf("b.example:8080"))  # dropped from the file, dropped


async def test_sighup_applies_an_edit_the_poll_cannot_see(redis, domains_coordinator):
    _app, path = domains_coordinator
    path.write_text("domains:\n  api.example: {rps: 5}\n")
    await overrides_applied(redis, "api.example:443", "rps", "5.0")
    stamp = path.stat()
    path.write_text("domains:\n  api.example: {rps: 6}\n")  # same size...
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # ...and mtime: invisible to the poll
    await asyncio.sleep(1.5)
    assert await redis.hget(keys.pacing_conf("api.example:443"), "rps") == "5.0"
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None)  # the coordinator's handler is in
    os.kill(os.getpid(), signal.SIGHUP)
    await overrides_applied(redis, "api.example:443", "rps", "6.0", timeout_s=0.8)


async def test_domains_show_prints_the_limit_and_its_source(http, redis, redis_url, start_edge, api_key, target, tmp_path):
    domain = domain_of(target.url)
    shown = await admin(redis_url, "--json", "domains", "show", target.url)
    assert shown.returncode == 0, shown.stderr
    view = orjson.loads(shown.stdout)
    assert (view["domain"], view["rps"], view["rps_source"], view["max_concurrent_source"]) == (domain, 2, "default", "default")

    path = tmp_path / "other-domains.yaml"  # reload --file takes any file
    path.write_text(f"domains:\n  {domain}: {{max_concurrent: 4, max_rps: 10}}\n")
    reloaded = await admin(redis_url, "domains", "reload", "--file", str(path))
    assert reloaded.returncode == 0, reloaded.stderr
    listed = await admin(redis_url, "domains", "list")
    assert f"{domain}  max_concurrent=4 max_rps=10.0" in listed.stdout

    edge = await start_edge("iad")
    [job] = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:25"}])
    await wait_final(http, edge.url, api_key, job)
    shown = await admin(redis_url, "domains", "show", domain)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"domain          {domain}" in text
    assert "rps             10 (header, clamped to the ceiling)" in text
    assert "max_concurrent  4 per node (config)" in text
    assert "paused          no" in text and "waiting         iad=0 lax=0 ord=0" in text

    bad = await admin(redis_url, "domains", "show", "not a domain")
    assert bad.returncode == 2 and "not a domain" in bad.stderr


async def test_an_operator_pauses_a_domain_and_resumes_it(http, redis, redis_url, start_edge, api_key, target):
    domain = domain_of(target.url)
    edge = await start_edge("iad")
    paused = await admin(redis_url, "--json", "domains", "pause", target.url)
    assert paused.returncode == 0, paused.stderr
    assert orjson.loads(paused.stdout)["domain"] == domain
    jobs = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?paused={i}"} for i in range(3)])
    await asyncio.sleep(1.0)
    assert not target.matching("/echo")  # every job waits; nothing is lost
    assert "paused          until" in (await admin(redis_url, "domains", "show", domain)).stdout

    resumed = await admin(redis_url, "domains", "resume", domain)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    for job in jobs:
        assert (await wait_final(http, edge.url, api_key, job, timeout_s=10))["status"] == "success"
    assert len(target.matching("/echo")) == 3
    bad = await admin(redis_url, "domains", "pause", domain, "--for", "-1")
    assert bad.returncode == 2 and "--for" in bad.stderr


async def test_an_operator_pauses_a_customers_flow_control_key_and_resumes_it(
    http, redis, redis_url, start_edge, coordinator, api_key, target
):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {domain_of(target.url)}: {{rps: 50, max_concurrent: 8}}\n"))
    edge = await start_edge("iad")
    flow = {"key": "acct-7", "rate": 10}
    [first] = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?k=0", "flow_control": flow}])
    await wait_final(http, edge.url, api_key, first)  # the key exists once a job named it

    unknown = await admin(redis_url, "flow-control", "pause", "--customer", "globex", "acct-7")
    assert unknown.returncode == 1 and "no flow-control key" in unknown.stderr  # keys are per customer
    paused = await admin(redis_url, "--json", "flow-control", "pause", "--customer", "acme", "acct-7", "--for", "600")
    assert paused.returncode == 0, paused.stderr
    assert orjson.loads(paused.stdout)["paused"] is True
    [held] = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?k=1", "flow_control": flow}])
    [other] = await submit_many(http, [edge.url], api_key, [{"url": f"{target.url}/echo?k=2"}])
    assert (await wait_final(http, edge.url, api_key, other, timeout_s=10))["status"] == "success"  # the domain is not paused
    await asyncio.sleep(0.5)
    assert not [r for r in target.matching("/echo") if r.query.get("k") == "1"]
    assert "paused       until" in (await admin(redis_url, "flow-control", "show", "--customer", "acme", "acct-7")).stdout

    resumed = await admin(redis_url, "flow-control", "resume", "--customer", "acme", "acct-7")
    assert resumed.returncode == 0 and "paused       no" in resumed.stdout, resumed.stderr
    assert (await wait_final(http, edge.url, api_key, held, timeout_s=20))["status"] == "success"

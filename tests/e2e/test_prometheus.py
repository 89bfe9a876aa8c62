"""Every dashboard panel and alert rule, run by a real Prometheus scraping a real cluster.

The cluster starts the way `make up-local` starts it (``python -m
ezthrottle_server.devcluster up``), which also starts the ``prometheus`` binary
(Debian's package) with the scrape config it renders and the alert rules of
``infra/prometheus/alerts.yml``, here at a 1 s interval on a free port with
its TSDB in the test's state directory. Traffic: jobs to a loopback target
across the three regions with webhooks, one raced in all three, a webhook
that answers 410 (a dead letter and a missed quorum), a domain that answers
429 with Retry-After (a paused domain with jobs waiting), a scheduled job, a
duplicate, a refused destination and a wrong API key. Then, through
Prometheus' HTTP API: every query parses and evaluates, every metric it
names exists, every panel returns series, the panels this traffic feeds show
it, the rules load and evaluate, and the alerts this traffic should raise
fire.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import yaml

from ezthrottle_server.infra.dashboards import BOARDS, DASHBOARDS_DIR, RATE, exprs
from ezthrottle_server.infra.prometheus import ALERTS_FILE
from support.cluster import local_cluster
from support.redis_server import free_port
from support.targets import Target, WebhookReceiver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no `prometheus` binary on PATH: apt-get install prometheus (.ci/run installs it) to run this proof",
    ),
]

T = TypeVar("T")
METRIC_NAME = re.compile(r"\b(ezt_[a-z0-9_]+|up)\b")
SCRAPE_S = 1

# Panels (dashboard file, title) that this traffic must move off zero.
MUST_SHOW_TRAFFIC = {
    ("overview.json", "Jobs accepted /s"),
    ("overview.json", "Jobs queued"),
    ("overview.json", "Active coordinators"),
    ("overview.json", "Jobs by outcome"),
    ("overview.json", "Attempts by status class"),
    ("overview.json", "Queue depth by stage"),
    ("overview.json", "Accept to first send"),
    ("overview.json", "API requests by status"),
    ("overview.json", "Refusals"),
    ("overview.json", "Scrape targets up"),
    ("regions.json", "Region state"),
    ("regions.json", "Coordinator leadership"),
    ("regions.json", "Jobs accepted per region"),
    ("regions.json", "Attempts per region and class"),
    ("regions.json", "Attempt latency p95"),
    ("regions.json", "Routing p99"),
    ("regions.json", "Failed jobs per region and reason"),
    ("regions.json", "Queue depth per region"),
    ("regions.json", "Oldest wait per region"),
    ("regions.json", "Delayed work"),
    ("regions.json", "Race wins per region"),
    ("regions.json", "Win share per region"),
    ("domains.json", "Active domains"),
    ("domains.json", "Paused domains"),
    ("domains.json", "Limit sources"),
    ("domains.json", "Current limits"),
    ("domains.json", "In-flight limit per node"),
    ("domains.json", "Limit over time"),
    ("domains.json", "Pause left"),
    ("domains.json", "Jobs waiting per domain"),
    ("domains.json", "Oldest wait per domain"),
    ("domains.json", "Accept to first send per region"),
    ("domains.json", "Grants per region"),
    ("domains.json", "Retry-After pauses"),
    ("domains.json", "Invalid rate headers"),
    ("delivery.json", "Delivered share"),
    ("delivery.json", "Dead-letter jobs"),
    ("delivery.json", "Quorum misses (1h)"),
    ("delivery.json", "POSTs by outcome"),
    ("delivery.json", "Time to quorum"),
    ("delivery.json", "Dead letters by reason"),
    ("delivery.json", "Quorum misses, replays, reclaims"),
    ("delivery.json", "Dead-letter jobs over time"),
}
MUST_FIRE = {"EZThrottleWebhookDeadLetters", "EZThrottleWebhookQuorumMissed"}


class LoopThread:
    """An event loop in a thread, so loopback servers live as long as the module's cluster."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        reply = self.http.get(path, params=params).json()
        assert reply["status"] == "success", (path, params, reply)
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def wait(self, expr: str, ok: Callable[[float], bool], what: str, timeout_s: float = 45) -> None:
        deadline = time.monotonic() + timeout_s
        last = math.nan
        while time.monotonic() < deadline:
            last = self.value(expr)
            if ok(last):
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {expr} = {last}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prometheus = {
        "EZT_LOCAL_PROMETHEUS": "1",
        "EZT_LOCAL_PROMETHEUS_PORT": str(free_port()),
        "EZT_LOCAL_PROMETHEUS_INTERVAL_S": str(SCRAPE_S),
        "EZT_METRICS_SAMPLE_S": "0.5",
    }
    with local_cluster(tmp_path_factory.mktemp("prom-cluster"), prometheus) as info:
        yield info


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LoopThread, Target, Target, WebhookReceiver]]:
    loop = LoopThread()
    target, paused, receiver = (loop.run(s.start()) for s in (Target(), Target(), WebhookReceiver()))
    try:
        yield loop, target, paused, receiver  # type: ignore[misc]
    finally:
        for s in (target, paused, receiver):
            loop.run(s.stop())
        loop.close()


@pytest.fixture(scope="module")
def prometheus_api(cluster: dict[str, Any]) -> Iterator[Prometheus]:
    assert cluster["prometheus"], f"up did not start Prometheus: {cluster['prometheus_note']}"
    prom = Prometheus(cluster["prometheus"])
    try:
        yield prom
    finally:
        prom.http.close()


@pytest.fixture(scope="module")
def prometheus(cluster: dict[str, Any], servers: Any, prometheus_api: Prometheus) -> Prometheus:
    """The cluster's Prometheus, once the traffic below shows in it."""
    loop, target, paused, receiver = servers
    prom = prometheus_api
    # Counters are at 0 in a first scrape of every process: the traffic's increase shows.
    prom.wait('count(up{job="ezthrottle"} == 1)', lambda v: v == 5, "a first scrape of every process")
    edges = cluster["regions"]
    auth = {"Authorization": f"Bearer {cluster['api_key']}"}

    def submit(region: str, job: dict[str, Any], *, headers: dict[str, str] = auth) -> httpx.Response:
        return httpx.post(f"{edges[region]}/api/v1/jobs", json=job, headers=headers, timeout=10)

    hook = {"url": f"{receiver.url}/hooks"}
    regions = ["iad", "lax", "ord"]
    accepted = []
    # Healthy work in every region, each with a webhook; one target answer raises its domain's limit by header.
    accepted.append(submit("iad", {"url": f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:20", "webhooks": [hook]}))
    for i in range(6):
        accepted.append(submit(regions[i % 3], {"url": f"{target.url}/echo", "idempotent_key": f"echo-{i}", "webhooks": [hook]}))
    accepted.append(submit("lax", {"url": f"{target.url}/status/200?h=X-EZTHROTTLE-RPS:abc"}))  # ignored as invalid
    # Raced in every region: one wins.
    accepted.append(submit("ord", {"url": f"{target.url}/echo", "idempotent_key": "race", "regions": regions, "webhooks": [hook]}))
    accepted.append(submit("ord", {"url": f"{target.url}/status/400"}))  # fails: not retryable
    # The only voting webhook answers 410 Gone: a dead letter, and the job's quorum is out of reach.
    accepted.append(
        submit("iad", {"url": f"{target.url}/echo", "idempotent_key": "gone", "webhooks": [{"url": f"{target.url}/status/410"}]})
    )
    # A scheduled job, two minutes out: it sits in the delayed set.
    accepted.append(submit("lax", {"url": f"{target.url}/echo", "idempotent_key": "later", "retry_at": int(time.time() * 1000) + 120_000}))
    # A domain that pauses everything for 30 s: its jobs wait behind the pause.
    for i in range(3):
        accepted.append(submit(regions[i], {"url": f"{paused.url}/status/429?h=Retry-After:30", "idempotent_key": f"p-{i}"}))
    assert [r.status_code for r in accepted] == [201] * len(accepted), [r.text for r in accepted if r.status_code != 201]
    assert submit("lax", {"url": f"{target.url}/echo", "idempotent_key": "echo-1", "webhooks": [hook]}).json()["status"] == "duplicate"
    refused = submit("ord", {"url": "http://169.254.169.254/latest/meta-data/"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "outbound_blocked"
    assert submit("iad", {"url": f"{target.url}/echo"}, headers={"Authorization": "Bearer ezt_live_wrong"}).status_code == 401

    loop.run(receiver.wait_for(8, "/hooks", timeout_s=30), timeout_s=35)
    loop.run(paused.wait_for(1, timeout_s=30), timeout_s=35)
    prom.wait("sum(ezt_webhook_quorum_missed_total)", lambda v: v >= 1, "a missed quorum")
    prom.wait("sum(ezt_domain_paused)", lambda v: v >= 1, "the paused domain")
    prom.wait('sum(ezt_domain_queue_depth{stage="waiting"})', lambda v: v >= 1, "jobs waiting behind the pause")
    prom.wait("sum(ezt_delayed_jobs)", lambda v: v >= 1, "the scheduled job")
    prom.wait("sum(ezt_jobs_finished_total)", lambda v: v >= 11, "finished jobs")
    prom.wait("sum(ezt_webhook_deliveries_total)", lambda v: v >= 9, "webhook POSTs")
    prom.wait("sum(ezt_outbound_refused_total) + sum(ezt_auth_failures_total)", lambda v: v >= 2, "refusals")
    prom.wait("count(ezt_region_state)", lambda v: v == 3, "every region's state")
    time.sleep(4 * SCRAPE_S)  # a few more scrapes, so rates over the last seconds see it all
    return prom


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {b.file: orjson.loads((DASHBOARDS_DIR / b.file).read_bytes()) for b in BOARDS}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]]


def panel_queries(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(file, panel title, PromQL with Grafana's variables filled in) of every panel query."""
    return [(f, title, expr.replace(RATE, f"{10 * SCRAPE_S}s")) for f, d in dashboards.items() for title, expr in exprs(d)]


def test_up_local_started_prometheus_and_said_where(cluster: dict[str, Any], prometheus: Prometheus) -> None:
    assert f"prometheus  {cluster['prometheus']}" in cluster["stdout"]
    assert "prometheus" in cluster["pids"]
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert {t["labels"]["component"] for t in targets} == {"edge", "coordinator", "delivery"}
    assert len(targets) == 5 and all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]


def test_every_metric_a_panel_or_rule_names_exists(prometheus: Prometheus, dashboards: Any, rules: Any) -> None:
    known = set(prometheus.get("/api/v1/label/__name__/values"))
    named = {(f"{f}: {title}", name) for f, title, expr in panel_queries(dashboards) for name in METRIC_NAME.findall(expr)}
    named |= {(f"alert {r['alert']}", name) for r in rules for name in METRIC_NAME.findall(r["expr"])}
    missing = sorted(f"{where}: {name}" for where, name in named if name not in known)
    assert not missing, "queries name metrics that Prometheus has never seen:\n" + "\n".join(missing)
    assert len({name for _, name in named}) >= 40


def test_every_panel_query_parses_and_returns_series(prometheus: Prometheus, dashboards: Any) -> None:
    end = time.time()
    empty: list[str] = []
    shows: dict[tuple[str, str], bool] = defaultdict(bool)
    for f, title, expr in panel_queries(dashboards):
        result = prometheus.get("/api/v1/query_range", query=expr, start=end - 60, end=end, step=f"{SCRAPE_S}s")["result"]
        if not result:
            empty.append(f"{f}: {title}: {expr}")
        values = [float(v) for series in result for _, v in series["values"]]
        shows[(f, title)] |= any(math.isfinite(v) and v > 0 for v in values)
    assert not empty, "panel queries without any series:\n" + "\n".join(empty)
    assert set(shows) >= MUST_SHOW_TRAFFIC, sorted(MUST_SHOW_TRAFFIC - set(shows))
    idle = sorted(f"{f}: {title}" for f, title in MUST_SHOW_TRAFFIC if not shows[(f, title)])
    assert not idle, "panels this traffic should have moved stayed at zero:\n" + "\n".join(idle)


def test_every_alert_rule_loads_and_evaluates(prometheus: Prometheus, rules: list[dict[str, Any]]) -> None:
    for r in rules:
        prometheus.query(r["expr"])  # parses and evaluates
    deadline = time.monotonic() + 15
    while True:
        loaded = [r for g in prometheus.get("/api/v1/rules", type="alert")["groups"] for r in g["rules"]]
        evaluated = [r for r in loaded if r["health"] != "unknown"]
        if len(evaluated) == len(rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules)
    broken = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not broken, broken


def test_the_traffic_raises_its_alerts(prometheus: Prometheus) -> None:
    deadline = time.monotonic() + 15
    firing: set[str] = set()
    while time.monotonic() < deadline and not firing >= MUST_FIRE:
        firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"}
        time.sleep(0.5)
    assert firing >= MUST_FIRE, firing
    quiet = {"EZThrottleRegionDown", "EZThrottleProcessDown", "EZThrottleNoActiveCoordinator", "EZThrottleTwoActiveCoordinators"}
    assert not quiet & firing, firing


def test_sampled_gauges_come_from_the_active_coordinator_only(prometheus: Prometheus) -> None:
    series = prometheus.query("ezt_delayed_jobs")
    assert {s["metric"]["component"] for s in series} == {"coordinator"}
    paused = prometheus.query("ezt_domain_paused == 1")
    assert len(paused) == 1 and paused[0]["metric"]["domain"].startswith("127.0.0.1:")
    sources = {s["metric"]["source"] for s in prometheus.query("ezt_domain_rps_limit")}
    assert sources <= {"default", "config", "header", "learned"} and sources

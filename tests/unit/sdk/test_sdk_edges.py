"""Several edges: parsing, discovery, nearest-first by round-trip time, failover."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ezthrottle import AsyncEZThrottle, ConnectionError, EZThrottle, ValidationError
from ezthrottle._edges import EdgeSet, edges_from_regions, parse_edge_urls

pytestmark = pytest.mark.timeout(30)

KEY = "ezt_test_edges_0123456789"
TARGET = "https://api.example.com/x"


class Edge:
    """A loopback edge: /healthz after ``delay_s``, jobs, and a regions list."""

    def __init__(self, delay_s: float = 0.0, regions: Any = None) -> None:
        self.delay_s = delay_s
        self.regions = regions
        self.jobs: list[dict[str, Any]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                if self.path == "/healthz":
                    time.sleep(outer.delay_s)
                    self._answer(200, {"status": "ok"})
                elif self.path == "/api/v1/regions" and outer.regions is not None:
                    self._answer(200, outer.regions)
                else:
                    self._answer(404, {"error": {"code": "not_found", "message": self.path}})

            def do_POST(self) -> None:
                outer.paths.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                outer.jobs.append(json.loads(self.rfile.read(length)))
                self._answer(201, {"job_id": f"job_{len(outer.jobs)}", "status": "queued"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def edges() -> Iterator[list[Edge]]:
    started = [Edge(0.15), Edge(0.0), Edge(0.05)]
    yield started
    for edge in started:
        edge.stop()


def test_parse_edge_urls() -> None:
    assert parse_edge_urls(" http://a:1/ ,http://b:2,,http://a:1") == ["http://a:1", "http://b:2"]
    assert parse_edge_urls(["http://a:1", "https://b"]) == ["http://a:1", "https://b"]
    for bad in ("", ",", ["ftp://x"], [3]):
        with pytest.raises(ValidationError, match="base_url"):
            parse_edge_urls(bad)  # type: ignore[arg-type]


def test_edges_from_regions_skips_down_regions_and_garbage() -> None:
    data = {
        "regions": [
            {"id": "iad", "state": "up", "edges": ["http://iad:1", "http://iad:2/"]},
            {"id": "lax", "state": "down", "edges": ["http://lax:1"]},
            {"id": "ord", "state": "degraded", "edges": ["not a url", 7, "http://ord:1"]},
            {"id": "xyz", "state": "unknown", "edges": None},
            "junk",
        ],
        "this_region": "iad",
    }
    assert edges_from_regions(data) == ["http://iad:1", "http://iad:2", "http://ord:1"]
    assert edges_from_regions({"regions": "x"}) == [] and edges_from_regions([]) == []


def test_edge_set_ranks_by_rtt_and_demotes_failures() -> None:
    edges = EdgeSet(["http://a", "http://b", "http://c", "http://d"])
    assert edges.probe_due(now=0.0)
    edges.ranked({"http://a": 0.3, "http://b": None, "http://c": 0.1, "http://d": 0.2}, now=0.0)
    assert edges.order == ["http://c", "http://d", "http://a", "http://b"]
    assert not edges.probe_due(now=10.0) and edges.probe_due(now=1000.0)
    edges.demote("http://c")
    assert edges.order == ["http://d", "http://a", "http://b", "http://c"]
    single = EdgeSet(["http://a"])
    assert not single.probe_due()


def test_the_nearest_healthy_edge_gets_the_calls(edges: list[Edge]) -> None:
    slow, fast, middle = edges
    with EZThrottle(KEY, base_url=[slow.url, middle.url, fast.url], probe_timeout_s=1) as client:
        assert client.submit_job(TARGET)["status"] == "queued"
        assert client.base_url == fast.url
        assert client.edges.order == [fast.url, middle.url, slow.url]
    assert len(fast.jobs) == 1 and slow.jobs == [] and middle.jobs == []


def test_env_var_lists_edges_and_a_dead_edge_is_skipped(edges: list[Edge], closed_port_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = edges[0]
    monkeypatch.setenv("EZTHROTTLE_URL", f"{closed_port_url},{slow.url}")
    with EZThrottle(KEY) as client:
        assert client.submit_job(TARGET)["status"] == "queued"
        assert client.edges.order == [slow.url, closed_port_url]  # unreachable goes last
    assert len(slow.jobs) == 1


def test_failover_carries_the_same_payload_to_the_next_edge(edges: list[Edge], closed_port_url: str) -> None:
    fast = edges[1]
    with EZThrottle(KEY, base_url=[closed_port_url, fast.url]) as client:
        client.edges.ranked({closed_port_url: 0.001, fast.url: 0.002})  # the dead one looks best
        result = client.submit_job(TARGET, idempotent_key="order-1")
        assert result["status"] == "queued"
        assert client.base_url == fast.url  # demoted at once
    assert fast.jobs == [{"url": TARGET, "method": "GET", "idempotent_key": "order-1"}]


def test_no_edge_reachable_is_a_connection_error_and_forward_or_fallback_falls_back(
    closed_port_url: str,
) -> None:
    other = closed_port_url.rsplit(":", 1)[0] + ":1"
    with EZThrottle(KEY, base_url=[closed_port_url, other]) as client:
        with pytest.raises(ConnectionError, match="cannot reach any edge"):
            client.submit_job(TARGET)
        assert client.forward_or_fallback(lambda: "direct", TARGET) == "direct"


def test_discovery_adds_the_edges_of_healthy_regions(edges: list[Edge]) -> None:
    slow, fast, middle = edges
    slow.regions = {
        "regions": [
            {"id": "iad", "state": "up", "edges": [slow.url, fast.url]},
            {"id": "lax", "state": "down", "edges": [middle.url]},
        ],
        "this_region": "iad",
    }
    with EZThrottle(KEY, base_url=slow.url, discover_edges=True) as client:
        client.submit_job(TARGET)
        assert client.edges.order == [fast.url, slow.url]
    assert len(fast.jobs) == 1 and "/healthz" not in middle.paths


@pytest.mark.asyncio
async def test_async_client_probes_once_for_concurrent_calls(edges: list[Edge]) -> None:
    import asyncio

    slow, fast, middle = edges
    async with AsyncEZThrottle(KEY, base_url=[slow.url, fast.url, middle.url]) as client:
        results = await asyncio.gather(*(client.submit_job(f"{TARGET}?{i}") for i in range(20)))
        assert {r["status"] for r in results} == {"queued"}
    assert len(fast.jobs) == 20
    assert fast.paths.count("/healthz") == 1 and slow.paths.count("/healthz") == 1


@pytest.mark.parametrize(
    ("url", "base", "allowed"),
    [
        ("https://lax.dam.example.com", "https://iad.dam.example.com", True),
        ("http://lax.dam.example.com", "https://iad.dam.example.com", False),  # no downgrade to plain http
        ("https://lax.dam.example.com", "http://iad.dam.example.com", False),  # nor a change of scheme the other way
        ("https://0.0.0.0:8702", "https://iad.dam.example.com", False),  # an edge without EZT_PUBLIC_URL
        ("https://[::]:8702", "https://iad.dam.example.com", False),
        ("https://127.0.0.1:8702", "https://iad.dam.example.com", False),  # the client's own machine
        ("https://[::1]:8702", "https://iad.dam.example.com", False),
        ("https://[::ffff:127.0.0.1]:8702", "https://iad.dam.example.com", False),
        ("https://localhost:8702", "https://iad.dam.example.com", False),
        ("https://LOCALHOST.:8702", "https://iad.dam.example.com", False),
        ("https://127.0.0.1:8702", "https://127.0.0.1:8701", True),  # a loopback base: make up-local
        ("http://0.0.0.0:8702", "http://localhost:8701", True),
        ("http://10.1.2.3:8702", "http://10.1.2.4:8701", True),
    ],
)
def test_discovery_keeps_only_edges_reachable_like_the_base(url: str, base: str, allowed: bool) -> None:
    edges = EdgeSet([base], discover=True)
    edges.add([url])
    assert (url in edges.order) is allowed and not edges.discover_pending


def test_discovery_ignores_a_downgraded_edge_a_real_edge_advertises(edges: list[Edge]) -> None:
    slow, fast, middle = edges
    port = fast.url.rsplit(":", 1)[1]
    slow.regions = {
        "regions": [{"id": "iad", "state": "up", "edges": [fast.url.replace("http://", "https://"), middle.url]}],
        "this_region": "iad",
    }
    with EZThrottle(KEY, base_url=slow.url, discover_edges=True) as client:
        client.submit_job(TARGET)
        assert f"https://127.0.0.1:{port}" not in client.edges.order and middle.url in client.edges.order

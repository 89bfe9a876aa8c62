"""``GET /openapi.json`` is true to the edge: the same routes, and schemathesis
finds no 5xx and no response outside it.

The fuzzer talks HTTP (requests, synchronous) to a real edge app on loopback,
run in a thread with its own event loop, on the session's real Redis. That
edge sends nothing: ``executor_concurrency=0`` gives its pacer no send slot,
so the jobs it accepts are parked in Redis, never sent; and its loop runs
under :class:`~unit.outbound.netguard.EgressGuard`, which refuses and records
any connect or name lookup off loopback (the test asserts there was none).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis as sync_redis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ezthrottle_server.common import apikeys
from ezthrottle_server.common.redisconn import connect
from ezthrottle_server.edge.app import create_app
from ezthrottle_server.edge.openapi import build_spec
from support.services import RunningApp, make_settings
from unit.outbound.netguard import EgressGuard

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
MIN_REQUESTS = 1000
FUZZ_BUDGET_S = 300.0  # a runaway guard (the run takes 60-90 s alone on 2 cores), not a performance goal
# Examples per operation and generation mode; submitting jobs gets the most.
EXAMPLES = {
    ("POST", "/api/v1/jobs"): 260,
    ("POST", "/api/v1/jobs/batch"): 80,
    ("POST", "/api/v1/proxy"): 80,
    ("POST", "/api/v1/webhook-secrets"): 50,
}
DEFAULT_EXAMPLES = 36
# Headers that frame the HTTP message itself. Negative generation may add any header; a generated one of these
# (``content-length: Ur``) is refused by the HTTP parser, before any route: aiohttp's plain 400, not the API's.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "expect", "connection", "upgrade", "te", "trailer", "host"})
CONSOLE_EXAMPLES = 4  # the console's pages (HTML, signed in by its cookie: the fuzzer sends the API key's)


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every route but the HEAD twins aiohttp adds to each GET."""
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def test_the_spec_and_the_routes_agree():
    settings_ = make_settings("edge", "redis://127.0.0.1:1/0", "iad")
    spec = build_spec(settings_)
    routes = app_routes(create_app(settings_))
    assert spec_operations(spec) == routes, {
        "not in the spec": routes - spec_operations(spec),
        "not served": spec_operations(spec) - routes,
    }


def test_every_error_answer_is_the_envelope_and_every_operation_has_a_success():
    spec = build_spec(make_settings("edge", "redis://127.0.0.1:1/0", "iad"))
    envelope = spec["components"]["schemas"]["Error"]
    assert envelope["required"] == ["error"] and envelope["properties"]["error"]["required"] == ["code", "message"]
    assert set(envelope["properties"]["error"]["properties"]) == {"code", "message", "field"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            statuses = {int(s) for s in op["responses"]}
            assert any(200 <= s < 300 for s in statuses), (method, path)
            for status, answer in op["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if op.get("security", spec["security"]):
                assert {401, 429, 503} <= statuses, (method, path)


class EdgeThread:
    """A real edge app on loopback, in its own thread and event loop, its egress guarded."""

    def __init__(self, redis_url: str) -> None:
        # auth_fail_limit=0: the fuzzer sends bad keys on purpose; limiting them would
        # turn the rest of the run into 429s (tests/integration/outbound covers the limit).
        self.settings = make_settings("edge", redis_url, "iad", node_id="edge-fuzz", executor_concurrency=0, auth_fail_limit=0)
        self.api_key = ""
        self.guard: EgressGuard | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edge-fuzz", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.guard = EgressGuard(self._loop).install()
        client = connect(self.settings.redis_url)
        try:
            self.api_key, _ = await apikeys.create_key(client, "fuzz")
        finally:
            await client.aclose()
        app = await RunningApp(create_app(self.settings), self.settings).start()
        try:
            self._ready.set()
            await self._stop.wait()
        finally:
            await app.stop()
            self.guard.uninstall()

    def __enter__(self) -> EdgeThread:
        self._thread.start()
        assert self._ready.wait(30), "the edge did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@pytest.fixture
def fuzz_edge(redis_url: str) -> Iterator[EdgeThread]:
    if redis_url.startswith("redis+cluster://"):  # a whole run against a cluster
        from redis.cluster import RedisCluster

        with RedisCluster.from_url("redis://" + redis_url.split("://", 1)[1]) as c:
            c.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        with sync_redis.Redis.from_url(redis_url) as r:
            r.flushall()
    with EdgeThread(redis_url) as edge:
        yield edge


def test_the_served_document_is_the_spec(fuzz_edge):
    got = requests.get(f"{fuzz_edge.url}/openapi.json", timeout=5)
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("application/json")
    assert got.json() == orjson.loads(orjson.dumps(build_spec(fuzz_edge.settings)))


@pytest.mark.timeout(FUZZ_BUDGET_S + 60)  # the run's own guard decides, not the suite's 120 s (a loaded machine takes longer)
def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_spec(fuzz_edge):
    schema = schemathesis.openapi.from_dict(requests.get(f"{fuzz_edge.url}/openapi.json", timeout=5).json())
    headers = {"Authorization": f"Bearer {fuzz_edge.api_key}"}
    sent: Counter[tuple[str, str]] = Counter()
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    session = requests.Session()

    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES.get(key, CONSOLE_EXAMPLES if key[1].startswith("/console") else DEFAULT_EXAMPLES),
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                assume(not any(name.lower() in FRAMING_HEADERS for name in (case.headers or {})))
                signed_in = {**headers, "Cookie": f"ezt_console={fuzz_edge.api_key}"} if case.path.startswith("/console") else headers
                response = case.call(base_url=fuzz_edge.url, session=session, headers=signed_in, timeout=10)
                sent[key] += 1  # noqa: B023 - fuzz() runs within this iteration
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, key  # nothing to get wrong: no parameters, no body
    elapsed = time.monotonic() - started

    total = sum(sent.values())
    assert total >= MIN_REQUESTS, f"only {total} requests: {dict(sent)}"
    assert elapsed < FUZZ_BUDGET_S, f"the fuzz run took {elapsed:.0f}s"
    assert not any(s >= 500 for s in statuses), statuses
    assert 201 in statuses and 400 in statuses  # both accepted work and refused input were exercised
    assert fuzz_edge.guard is not None and fuzz_edge.guard.refused == [], fuzz_edge.guard.refused
    print(f"schemathesis: {total} requests in {elapsed:.1f}s; statuses {dict(sorted(statuses.items()))}")


# Inputs that once answered 500; each is now a 4xx in the error envelope.
FOUND = [
    ("GET", "/api/v1/deliveries/dead?limit=%C2%B2", None, {}, 400),  # '²'.isdigit(), int('²') raised
    ("POST", "/api/v1/jobs", {"url": "http://xn--a.test/"}, {}, 400),  # IDNA decoding raised at url.host
    ("POST", "/api/v1/jobs", {"url": "https://api.example/", "webhooks": [{"url": "http://xn--a.test/"}]}, {}, 400),
    ("POST", "/api/v1/proxy", {"target_url": "http://xn--a.test/api/v1/jobs", "method": "POST"}, {}, 400),
    ("POST", "/api/v1/jobs", b'{"url": "https://api.example/"}', {"Content-Encoding": "gzip"}, 400),  # undecodable body
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), FOUND)
async def test_inputs_that_once_answered_500_are_refused_with_a_4xx(http, edge, api_key, method, path, body, headers, status):
    data = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
    sent = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", **headers}
    async with http.request(method, edge.url + path, data=data, headers=sent, compress=None) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] in ("invalid_field", "invalid_request") and error["message"]

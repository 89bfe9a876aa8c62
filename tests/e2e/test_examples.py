"""Every example in ``examples/`` runs against a real local cluster (issue 6, item 8).

One cluster is started for the module, the way ``make up-local`` starts it, on
free ports; a loopback target stands in for every API the README calls and a
loopback receiver for every webhook URL. The target's domain gets a
``domains.yaml`` override, so the 2 requests/s default does not pace the suite.

Each example runs as a subprocess with only ``EZTHROTTLE_API_KEY``,
``EZTHROTTLE_URL``, ``EXAMPLE_TARGET`` and ``EXAMPLE_WEBHOOK`` set, under its
own customer (so the examples that rotate or delete webhook secrets do not
disturb the others, and they all run at once). Each must exit 0 (they assert
what they show); where it means something, the test checks the side effects
too: what the target received and from whom (this SDK, or the cluster), and
that the webhooks arrived and verify with the customer's secret.
"""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from ezthrottle import EZThrottle, Step, StepType, verify_webhook_signature
from ezthrottle_server.common import apikeys
from ezthrottle_server.common.redisconn import connect
from support.cluster import cli, cluster_files

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "examples"
EXAMPLES = sorted(p.stem for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))
EXAMPLE_TIMEOUT_S = 60
PARALLEL = 6
SDK_AGENT = "ezthrottle-python/"  # the SDK's own requests (FRUGAL steps run locally)


# -- loopback servers (threads: the examples and the test are sync) ------------------------


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def origin(self) -> str:
        """Who sent it: the SDK (locally), the cluster (no User-Agent) or other code."""
        agent = self.headers.get("user-agent", "")
        if agent.startswith(SDK_AGENT):
            return "sdk"
        return "cluster" if not agent else "app"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        hit = Hit(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
        status, delay_s = self.server.answer(hit)
        time.sleep(delay_s)
        body = orjson.dumps({"method": hit.method, "path": hit.path, "body": hit.body.decode(errors="replace")})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


class Recorder(ThreadingHTTPServer):
    """Records every request. As a target (``httpbin=True``) it answers like
    ``examples/_support.py`` documents: ``.../status/<code>``, ``.../delay/<s>``,
    ``.../flaky/<code>/<n>`` (that code to the first n requests for the URL)."""

    daemon_threads = True

    def __init__(self, httpbin: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.httpbin = httpbin
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out on purpose (auto_forward_status_codes) leaves a broken pipe

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, hit: Hit) -> tuple[int, float]:
        with self._lock:
            self.hits.append(hit)
            seen = sum(1 for h in self.hits if h.path == hit.path)
        if not self.httpbin:
            return 200, 0.0
        status, delay_s = 200, 0.0
        if m := re.search(r"/status/(\d{3})(?:[/?]|$)", hit.path):
            status = int(m.group(1))
        if m := re.search(r"/delay/(\d+(?:\.\d+)?)(?:[/?]|$)", hit.path):
            delay_s = min(float(m.group(1)), 10.0)
        if (m := re.search(r"/flaky/(\d{3})/(\d+)(?:[/?]|$)", hit.path)) and seen <= int(m.group(2)):
            status = int(m.group(1))
        return status, delay_s

    def under(self, prefix: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path.startswith(prefix)]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@dataclass
class Servers:
    target: Recorder
    receiver: Recorder


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    target, receiver = Recorder(httpbin=True), Recorder(httpbin=False)
    try:
        yield Servers(target, receiver)
    finally:
        target.stop()
        receiver.stop()


# -- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, servers: Servers) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("examples-cluster")
    state, regions = cluster_files(root)
    # domains.yaml beside regions.yaml: the target may take far more than 2 requests/s.
    target_domain = servers.target.url.removeprefix("http://")
    (root / "domains.yaml").write_text(yaml.safe_dump({"domains": {target_domain: {"rps": 100, "burst": 20, "max_concurrent": 32}}}))
    up = cli(state, regions, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    info = orjson.loads((state / "cluster.json").read_bytes())
    info.update(state=state)
    try:
        yield info
    finally:
        down = cli(state, regions, "down")
        assert down.returncode == 0, down.stderr


def _create_keys(redis_url: str, customers: list[str]) -> list[str]:
    async def create() -> list[str]:
        redis = connect(redis_url)
        try:
            return [(await apikeys.create_key(redis, c))[0] for c in customers]
        finally:
            await redis.aclose()

    return asyncio.run(create())


def secret_for(name: str) -> str:
    return f"whsec-test-{name}"


# -- running the examples -------------------------------------------------------------------


@dataclass
class Run:
    name: str
    api_key: str
    done: subprocess.CompletedProcess[str] | None
    seconds: float
    error: str = ""

    def explain(self) -> str:
        if self.done is None:
            return f"{self.name}: {self.error}"
        return f"{self.name} exited {self.done.returncode}:\n{self.done.stdout[-3000:]}\n{self.done.stderr[-3000:]}"


def _run_example(name: str, api_key: str, cluster: dict[str, Any], servers: Servers) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EZT", "EXAMPLE_", "WEBHOOK_SECRET"))}
    env.update(
        EZTHROTTLE_API_KEY=api_key,
        EZTHROTTLE_URL=cluster["regions"]["iad"],
        EXAMPLE_TARGET=f"{servers.target.url}/{name}",
        EXAMPLE_WEBHOOK=f"{servers.receiver.url}/{name}",
        EZT_LOCAL_DIR=str(cluster["state"]),  # never the developer's own .local/
    )
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES_DIR / f"{name}.py")],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return Run(name, api_key, None, time.monotonic() - started, f"timed out after {exc.timeout}s: {exc.stdout!r}")
    return Run(name, api_key, done, time.monotonic() - started)


@pytest.fixture(scope="module")
def runs(cluster: dict[str, Any], servers: Servers) -> dict[str, Run]:
    """Every example, run at once (each under its own customer), before any test looks."""
    keys = dict(zip(EXAMPLES, _create_keys(cluster["redis_url"], [f"ex-{n}"[:64] for n in EXAMPLES])))
    for name, key in keys.items():  # so the webhooks the test's receiver gets can be verified
        with EZThrottle(api_key=key, base_url=cluster["regions"]["iad"]) as client:
            client.create_webhook_secret(secret_for(name))
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {n: pool.submit(_run_example, n, keys[n], cluster, servers) for n in EXAMPLES}
        return {n: f.result() for n, f in futures.items()}


# -- side effects ----------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def hits(servers: Servers, name: str, path: str) -> list[Hit]:
    """Target requests of one example to one README path (query strings ignored)."""
    return [h for h in servers.target.under(f"/{name}/") if h.path.split("?")[0] == f"/{name}/{path}"]


def origins(servers: Servers, name: str, path: str) -> list[str]:
    return [h.origin for h in hits(servers, name, path)]


def raced(servers: Servers, name: str, path: str, regions: int, jobs: int = 1) -> None:
    """``jobs`` jobs raced in ``regions`` regions: each region may send, none twice."""
    sent = origins(servers, name, path)
    assert set(sent) == {"cluster"} and jobs <= len(sent) <= jobs * regions, sent


def webhooks(servers: Servers, name: str, path: str, count: int = 1) -> list[Hit]:
    """The webhooks delivered to ``path``, once ``count`` arrived; each verifies with the secret."""
    got = wait_for(lambda: len(found := servers.receiver.under(f"/{name}/{path}")) >= count and found, f"{count} webhook(s) at {path}")
    for hook in got:
        verified, reason = verify_webhook_signature(hook.body, hook.headers.get("x-ezthrottle-signature"), secret_for(name))
        assert verified, (path, reason)
    return got


def check_quick_start(s: Servers) -> None:
    assert origins(s, "quick_start", "api.example.com/endpoint") == ["cluster"]
    [hook] = webhooks(s, "quick_start", "your-app.com/webhook")
    assert orjson.loads(hook.body)["status"] == "success"


def check_step_types(s: Servers) -> None:
    raced(s, "step_types", "api.stripe.com/charges", regions=3)
    assert origins(s, "step_types", "api.example.com") == ["sdk"]  # FRUGAL: local, and it worked
    # FRUGAL got a 503 locally; EZThrottle sent it again and got the 200
    forwarded = origins(s, "step_types", "api.example.com/flaky/503/1")
    assert forwarded[0] == "sdk" and set(forwarded[1:]) == {"cluster"}, forwarded


def check_idempotency_hash(s: Servers) -> None:
    assert len(hits(s, "idempotency_hash", "api.stripe.com/charges")) == 1  # charged once


def check_idempotency_unique(s: Servers) -> None:
    assert len(hits(s, "idempotency_unique", "api.example.com/status")) == 3
    assert len(hits(s, "idempotency_unique", "api.com/status")) == 1


def check_idempotency_custom_key(s: Servers) -> None:
    assert len(hits(s, "idempotency_custom_key", "api.example.com/process")) == 1


def check_workflow_chaining(s: Servers) -> None:
    assert origins(s, "workflow_chaining", "api.example.com") == ["sdk"]
    raced(s, "workflow_chaining", "notify.com", regions=2)
    assert origins(s, "workflow_chaining", "analytics.com/track") == ["sdk"]  # from the webhook


def check_fallback_chains(s: Servers) -> None:
    assert set(origins(s, "fallback_chains", "primary-api.com/status/500")) == {"cluster"}
    assert origins(s, "fallback_chains", "backup-api.com") == ["cluster"]


def check_multi_region_racing(s: Servers) -> None:
    raced(s, "multi_region_racing", "api.example.com", regions=3)
    webhooks(s, "multi_region_racing", "app.com/webhook")


def check_webhook_fanout_quorum(s: Servers) -> None:
    for path in ("app.com/payment-complete", "analytics.com/track", "notify.com/alert", "backup.com/webhook"):
        [hook] = webhooks(s, "webhook_fanout_quorum", path)
        assert orjson.loads(hook.body)["status"] == "success"


def check_retry_policies(s: Servers) -> None:
    assert origins(s, "retry_policies", "api.example.com/flaky/503/2") == ["cluster"] * 3


def check_legacy_queue_request(s: Servers) -> None:
    [hook] = webhooks(s, "legacy_queue_request", "your-app.com/webhook")
    assert orjson.loads(hook.body)["status"] == "success"


def check_mixed_frugal_to_performance(s: Servers) -> None:
    name = "mixed_frugal_to_performance"
    assert origins(s, name, "api.openai.com/v1/chat/completions") == ["sdk"]
    raced(s, name, "api.sendgrid.com/send", regions=3)
    [hook] = webhooks(s, name, "app.com/email-sent")
    assert orjson.loads(hook.body)["response"]["status_code"] == 200


def check_mixed_performance_to_frugal(s: Servers) -> None:
    name = "mixed_performance_to_frugal"
    raced(s, name, "api.stripe.com/charges", regions=2)
    # The example delivered the webhook to its handler twice: analytics ran once, here.
    assert origins(s, name, "analytics.com/track") == ["sdk"]


def check_mixed_complex(s: Servers) -> None:
    name = "mixed_complex"
    assert origins(s, name, "cheap-api.com") == ["sdk"]  # run 1: local success
    down = origins(s, name, "cheap-api.com/status/500")  # run 2: local, then forwarded
    assert down[0] == "sdk" and set(down[1:]) == {"cluster"} and len(down) >= 2, down
    assert origins(s, name, "backup-api.com") == ["cluster"]  # run 2 only
    raced(s, name, "critical-webhook.com", regions=3, jobs=2)  # once per run
    assert origins(s, name, "analytics.com/track") == ["sdk", "sdk"]  # once per run, by the app
    assert hits(s, name, "hooks.slack.com/webhook") == []


def check_auto_forward_exception(s: Servers) -> None:
    # requests got the 429 here; EZThrottle charged once (a ForwardToEZThrottle job has no User-Agent)
    assert origins(s, "auto_forward_exception", "api.stripe.com/charges/flaky/429/1") == ["app", "cluster"]


def check_auto_forward_status_codes(s: Servers) -> None:
    # A job rebuilt from a failed request carries its headers, User-Agent included:
    # the cluster's send looks like the app's. The first of each pair failed here.
    name = "auto_forward_status_codes"
    assert [h.headers["user-agent"].split("/")[0] for h in hits(s, name, "httpbin.org/flaky/429/1")] == [
        "python-requests", "python-requests",
    ]  # fmt: skip
    timed_out = hits(s, name, "httpbin.org/delay/1")  # requests and httpx timed out; forwarded
    assert sorted((h.method, h.headers["user-agent"].split("/")[0]) for h in timed_out) == [
        ("GET", "python-requests"), ("GET", "python-requests"), ("POST", "python-httpx"), ("POST", "python-httpx"),
    ]  # fmt: skip
    assert [h.body for h in timed_out if h.method == "POST"] == [b"hi", b"hi"]


def check_asyncio_gather(s: Servers) -> None:
    assert len(hits(s, "asyncio_gather", "api.example.com/process")) == 6
    assert len(webhooks(s, "asyncio_gather", "app.com/webhook", count=6)) == 6


def check_asyncio_fault_tolerant_batch(s: Servers) -> None:
    assert len(hits(s, "asyncio_fault_tolerant_batch", "api.example.com/process")) == 3


def check_cancel_job(s: Servers) -> None:
    # the cancelled report and the expired flash sale never reached the target; the job in time did
    assert hits(s, "cancel_job", "api.example.com/reports") == []
    assert hits(s, "cancel_job", "api.example.com/flash-sale") == []
    assert origins(s, "cancel_job", "api.example.com/in-time") == ["cluster"]
    [hook] = webhooks(s, "cancel_job", "app.com/webhook")
    assert orjson.loads(hook.body)["status"] == "cancelled"


def check_search_jobs(s: Servers) -> None:
    # each job it listed was sent once, by the cluster; the listing itself sent nothing
    for i in range(5):
        assert origins(s, "search_jobs", f"api.example.com/orders/{i}") == ["cluster"]
    assert origins(s, "search_jobs", "api.example.com/orders/workflow") == ["cluster"]
    assert origins(s, "search_jobs", "api.example.com/receipts/W-1") == ["cluster"]  # the workflow's second step


def check_schedule_job(s: Servers) -> None:
    # each tick was one job, sent once by the cluster; the paused-then-deleted nightly report never ran
    beats = hits(s, "schedule_job", "api.example.com/heartbeat")
    assert len(beats) >= 2 and {h.origin for h in beats} == {"cluster"}
    keys = [h.headers.get("idempotency-key") for h in beats]
    assert len(set(keys)) == len(keys) and all(k and k.startswith("sched:") for k in keys), keys
    assert hits(s, "schedule_job", "api.example.com/reports/nightly") == []


CHECKS: dict[str, Callable[[Servers], None]] = {
    name.removeprefix("check_"): fn for name, fn in dict(globals()).items() if name.startswith("check_")
}


def test_every_check_names_an_example() -> None:
    assert set(CHECKS) <= set(EXAMPLES), set(CHECKS) - set(EXAMPLES)
    assert len(EXAMPLES) >= 28


@pytest.mark.parametrize("name", EXAMPLES)
def test_example(name: str, runs: dict[str, Run], servers: Servers) -> None:
    run = runs[name]
    assert run.done is not None and run.done.returncode == 0, run.explain()
    if name in CHECKS:
        CHECKS[name](servers)


# -- a webhook delivered twice, to the example receivers ---------------------------------------


def test_a_frugal_step_runs_once_however_often_its_webhook_is_delivered(
    cluster: dict[str, Any], servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A captured webhook, delivered twice to the Flask example and once more to the
    FastAPI one: the FRUGAL step it carries runs exactly once, on this side."""
    [api_key] = _create_keys(cluster["redis_url"], ["ex-redelivery"])
    secret = secret_for("redelivery")
    edge = cluster["regions"]["lax"]
    with EZThrottle(api_key=api_key, base_url=edge) as client:
        client.create_webhook_secret(secret)
        job = (
            Step(client)
            .url(f"{servers.target.url}/redelivery/api.stripe.com/charges")
            .webhooks([{"url": f"{servers.receiver.url}/redelivery/hook"}])
            .on_success(Step(client).url(f"{servers.target.url}/redelivery/analytics").type(StepType.FRUGAL))
            .execute()
        )
        [hook] = wait_for(lambda: servers.receiver.under("/redelivery/hook"), "the webhook", timeout_s=20)
    captured = orjson.loads(hook.body)
    assert captured["job_id"] == job["job_id"]
    assert [s["relation"] for s in captured["workflow"]["frugal_steps"]] == ["on_success"]
    assert hits(servers, "redelivery", "analytics") == []  # the server never runs it
    headers = {"X-EZThrottle-Signature": hook.headers["x-ezthrottle-signature"], "Content-Type": "application/json"}

    for key, value in {
        "EZTHROTTLE_API_KEY": api_key,
        "EZTHROTTLE_URL": edge,
        "WEBHOOK_SECRET_PRIMARY": secret,
        "EZT_LOCAL_DIR": str(cluster["state"]),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(EXAMPLES_DIR))
    monkeypatch.delitem(sys.modules, "_support", raising=False)
    flask_app = runpy.run_path(str(EXAMPLES_DIR / "webhook_receiver_flask.py"), run_name="receiver_flask")
    fastapi_app = runpy.run_path(str(EXAMPLES_DIR / "webhook_receiver_fastapi.py"), run_name="receiver_fastapi")
    try:
        answers = []
        with flask_app["app"].test_client() as http:
            for _ in range(2):
                answer = http.post("/webhook", data=hook.body, headers=headers)
                assert answer.status_code == 200, answer.get_data(as_text=True)
                answers.append(answer.get_json()["steps"])
            forged = http.post("/webhook", data=hook.body, headers={"X-EZThrottle-Signature": "t=1,v1=00"})
            assert forged.status_code == 401

        async def deliver_to_fastapi() -> tuple[Any, Any]:
            transport = httpx.ASGITransport(app=fastapi_app["app"])
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                answer = await http.post("/webhook", content=hook.body, headers=headers)
                assert answer.status_code == 200, answer.text
                return answer.json()["steps"], (await http.get(f"/result/{captured['idempotent_key']}")).json()

        steps, stored = asyncio.run(deliver_to_fastapi())
        answers.append(steps)
    finally:
        flask_app["client"].close()
        fastapi_app["client"].close()
        sys.modules.pop("_support", None)
    assert [[s["status"] for s in steps] for steps in answers] == [["ran"], ["already_claimed"], ["already_claimed"]]
    assert answers[0][0]["result"]["executed_locally"] is True
    assert origins(servers, "redelivery", "analytics") == ["sdk"]  # exactly once
    assert stored["found"] and stored["result"]["frugal_steps"][0]["status"] == "already_claimed"
    assert [r.job_id for r in flask_app["results"]] == [job["job_id"]] * 2

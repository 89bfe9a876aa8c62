"""Fixtures for the SDK's unit tests.

- ``api``: a real HTTP server on 127.0.0.1 that answers per the server's wire
  contract (jobs, webhook secrets, errors) and records what it received. It
  also plays a third-party target under ``/target/...`` for direct and FRUGAL
  calls. It is a test double of the wire, for these tests only.
- ``published``: the published ``ezthrottle==1.3.0`` in its own virtualenv,
  driven through ``published_sdk.py``, for parity checks.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ezthrottle import AsyncEZThrottle, EZThrottle
from support.published import PublishedSDK, published_sdk
from unit.sdk.contract import JOB_FIELDS

API_KEY = "ezt_test_acme_0123456789"
OTHER_API_KEY = "ezt_test_globex_0123456789"
CUSTOMERS = {API_KEY: "acme", OTHER_API_KEY: "globex"}
MAX_BODY_BYTES = 64 * 1024


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    dropped: bool = False

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    """An answer to give instead of the contract's, for the next API request."""

    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    delay_s: float = 0.0
    # A streamed answer: bytes are written and flushed, floats are pauses (s);
    # the connection closes after the last item.
    chunks: list[Any] | None = None


class ContractServer:
    """Loopback HTTP server speaking the EZThrottle API contract."""

    api_key = API_KEY
    other_api_key = OTHER_API_KEY

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self._script: collections.deque[Scripted] = collections.deque()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._job_by_key: dict[tuple[str, str], str] = {}
        self._secrets: dict[str, dict[str, str | None]] = {}
        self._claims: set[tuple[str, str]] = set()
        self._streams: dict[str, collections.deque[list[Any]]] = {}
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ContractServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- for tests ---------------------------------------------------------------

    def script(self, *answers: Scripted) -> None:
        """Answer the next API requests with these, in order."""
        with self._lock:
            self._script.extend(answers)

    @staticmethod
    def error(status: int, code: str, message: str = "scripted", headers: dict[str, str] | None = None) -> Scripted:
        """An error answer in the contract's shape."""
        return Scripted(status, {"error": {"code": code, "message": message}}, headers or {})

    @staticmethod
    def drop() -> Scripted:
        """Close the connection without answering."""
        return Scripted(drop=True)

    @staticmethod
    def slow(delay_s: float) -> Scripted:
        """Answer ``{}`` after a delay."""
        return Scripted(200, {}, delay_s=delay_s)

    def stream_events(self, job_id: str, *connections: list[Any]) -> None:
        """Serve ``GET /api/v1/jobs/{job_id}/events``: one list of chunks per connection.

        A job without streams answers 404 on that route, as an edge without
        event streams does.
        """
        with self._lock:
            self._streams.setdefault(job_id, collections.deque()).extend(connections)

    def set_job(self, job_id: str, **fields: Any) -> None:
        """Change what ``GET /api/v1/jobs/{job_id}`` shows (status, result...)."""
        with self._lock:
            self._jobs[job_id].update(fields)

    def job_view(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs[job_id]
            return {k: v for k, v in job.items() if k not in ("customer", "payload")}

    def api_requests(self, path_prefix: str = "/api/") -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(path_prefix)]

    def target_requests(self) -> list[Received]:
        return self.api_requests("/target/")

    # -- the contract --------------------------------------------------------------

    def answer(self, request: Received) -> Scripted:
        with self._lock:
            self.received.append(request)
            if request.path.startswith("/target/"):
                return _target_answer(request.path)
            if self._script:
                return self._script.popleft()
            customer = CUSTOMERS.get(request.headers.get("authorization", "").removeprefix("Bearer "))
            if customer is None:
                return self.error(401, "unauthorized", "missing or unknown API key")
            if len(request.body) > MAX_BODY_BYTES:
                return self.error(413, "payload_too_large", f"body over {MAX_BODY_BYTES} bytes")
            return self._route(customer, request)

    def _route(self, customer: str, request: Received) -> Scripted:
        if (request.method, request.path) == ("POST", "/api/v1/jobs"):
            return self._submit(customer, request)
        match = re.fullmatch(r"/api/v1/jobs/([^/]+)/events", request.path)
        if request.method == "GET" and match:
            job = self._jobs.get(match.group(1))
            streams = self._streams.get(match.group(1))
            if job is None or job["customer"] != customer or not streams:
                return self.error(404, "not_found", f"no route GET {request.path}")
            return Scripted(200, chunks=streams.popleft())
        match = re.fullmatch(r"/api/v1/jobs/([^/]+)/frugal-claims/([^/]+)", request.path)
        if request.method == "POST" and match:
            job_id, step_id = match.group(1), urllib.parse.unquote(match.group(2))
            job = self._jobs.get(job_id)
            if job is None or job["customer"] != customer:
                return self.error(404, "not_found", "job not found")
            if (job_id, step_id) in self._claims:
                return self.error(409, "conflict", f"{step_id} is already claimed")
            self._claims.add((job_id, step_id))
            return Scripted(201, {"status": "claimed", "job_id": job_id, "step_id": step_id})
        match = re.fullmatch(r"/api/v1/jobs/([^/]+)", request.path)
        if request.method == "GET" and match:
            job = self._jobs.get(match.group(1))
            if job is None or job["customer"] != customer:
                return self.error(404, "not_found", "job not found")
            return Scripted(200, {k: v for k, v in job.items() if k not in ("customer", "payload")})
        if request.path == "/api/v1/webhook-secrets":
            return self._secret(customer, request)
        if (request.method, request.path) == ("POST", "/api/v1/webhook-secrets/rotate"):
            new = request.json.get("new_secret")
            if not isinstance(new, str) or len(new) < 16:
                return self.error(400, "invalid_field", "new_secret: must be at least 16 characters")
            old = self._secrets.get(customer, {}).get("primary")
            self._secrets[customer] = {"primary": new, "secondary": old}
            return Scripted(200, {"status": "ok", "message": "Webhook secret rotated"})
        return self.error(404, "not_found", f"no route {request.method} {request.path}")

    def _submit(self, customer: str, request: Received) -> Scripted:
        try:
            payload = request.json
        except ValueError:
            return self.error(400, "invalid_json", "body is not JSON")
        if not isinstance(payload, dict) or "url" not in payload:
            return self.error(400, "invalid_request", "url is required")
        unknown = sorted(set(payload) - JOB_FIELDS)
        if unknown:
            return self.error(400, "invalid_request", f"unknown fields {unknown}")
        key = (
            payload.get("idempotent_key")
            or "hash_"
            + hashlib.sha256(json.dumps([customer, payload["method"], payload["url"], payload.get("body")]).encode()).hexdigest()[:32]
        )
        first = self._job_by_key.get((customer, key))
        if first is not None:
            return Scripted(200, {"job_id": first, "status": "duplicate", "idempotent_key": key})
        job_id = f"job_{len(self._jobs) + 1}"
        self._job_by_key[(customer, key)] = job_id
        self._jobs[job_id] = {
            "job_id": job_id,
            "status": "queued",
            "idempotent_key": key,
            "attempts": [],
            "result": None,
            "customer": customer,
            "payload": payload,
        }
        return Scripted(201, {"job_id": job_id, "status": "queued", "idempotent_key": key})

    def _secret(self, customer: str, request: Received) -> Scripted:
        if request.method == "POST":
            data = request.json
            secrets = [data.get("primary_secret"), data.get("secondary_secret")]
            if any(s is not None and len(s) < 16 for s in secrets) or secrets[0] is None:
                return self.error(400, "invalid_secret", "secrets need 16+ characters")
            self._secrets[customer] = {"primary": secrets[0], "secondary": secrets[1]}
            return Scripted(200, {"status": "ok", "message": "Webhook secrets saved"})
        stored = self._secrets.get(customer)
        if request.method == "DELETE":
            self._secrets.pop(customer, None)
            return Scripted(200, {"status": "ok", "message": "Webhook secrets deleted"})
        if stored is None:
            return self.error(404, "not_found", "no webhook secrets configured")
        secondary = stored["secondary"]
        return Scripted(
            200,
            {
                "customer_id": customer,
                "primary_secret": _mask(stored["primary"]),
                "secondary_secret": _mask(secondary) if secondary else None,
                "has_secondary": secondary is not None,
            },
        )


def _mask(secret: str | None) -> str:
    assert secret is not None
    return f"{secret[:4]}****{secret[-3:]}"


def _target_answer(path: str) -> Scripted:
    """``/target/status/<code>`` answers that status; ``/target/sleep/<ms>`` answers late."""
    kind, _, arg = path.removeprefix("/target/").partition("/")
    arg = arg.split("?")[0]
    if kind == "sleep":
        return Scripted(200, b"slept", delay_s=int(arg) / 1000)
    return Scripted(int(arg), f"target says {arg}".encode())


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) leaves a broken pipe behind


def _handler_for(server: ContractServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length),
            )
            answer = server.answer(request)
            if answer.drop:
                request.dropped = True
                self.close_connection = True
                return
            time.sleep(answer.delay_s)
            if answer.chunks is not None:
                self._stream(answer.chunks)
                return
            body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            content_type = "text/plain" if isinstance(answer.body, bytes) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, chunks: list[Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.close_connection = True
            try:
                for item in chunks:
                    if isinstance(item, (int, float)):
                        time.sleep(item)
                    else:
                        self.wfile.write(item)
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client had what it wanted

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[ContractServer]:
    server = ContractServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(api: ContractServer) -> Iterator[EZThrottle]:
    with EZThrottle(API_KEY, api.url, timeout_s=5) as sync_client:
        yield sync_client


@pytest_asyncio.fixture
async def async_client(api: ContractServer) -> AsyncIterator[AsyncEZThrottle]:
    async with AsyncEZThrottle(API_KEY, api.url, timeout_s=5) as client:
        yield client


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the published SDK, in its own virtualenv -----------------------------------------


@pytest.fixture(scope="session")
def published() -> PublishedSDK:
    """``ezthrottle==1.3.0`` in ``.cache/``, installed once and reused; skip without network."""
    return published_sdk(Path(__file__).with_name("published_sdk.py"))

"""What the examples share: where EZThrottle, the targets and the webhooks are.

Not an example itself. The README's code talks to ``https://api.stripe.com``,
``https://app.com/webhook`` and the like; the examples talk to loopback
stand-ins instead, and read everything else from the environment:

- ``EZTHROTTLE_API_KEY`` and ``EZTHROTTLE_URL``: the key and an edge. Without
  them, the ones ``make up-local`` wrote to ``.local/cluster.json``
  (``$EZT_LOCAL_DIR`` if set).
- ``EXAMPLE_TARGET``: the base URL of a loopback server that stands in for
  every target API. ``target("api.stripe.com/charges")`` is
  ``$EXAMPLE_TARGET/api.stripe.com/charges``. Any path answers 200 with the
  request echoed as JSON, except httpbin-style ones: ``.../status/500``
  answers 500, ``.../delay/1`` answers after a second, ``.../flaky/503/2``
  answers 503 to the first two requests for that URL and 200 after. Without
  it, a stand-in is started in this process (so an example waits for its jobs
  before it exits: a job sent to a stand-in that is gone fails to connect).
- ``EXAMPLE_WEBHOOK``: the base URL of a loopback receiver that stands in for
  ``https://app.com``; ``webhook("webhook")`` is ``$EXAMPLE_WEBHOOK/webhook``.
  Without it, a receiver that answers 200 is started in this process.

Examples that *are* webhook receivers (the Flask and FastAPI ones, the mixed
workflows) serve their own app on a free loopback port and use its URL.

The ``wait_*`` helpers check what an example shows; each is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = [
    "API_KEY",
    "EZTHROTTLE_URL",
    "RUN_ID",
    "target",
    "webhook",
    "serve_wsgi",
    "serve_asgi",
    "wait_final",
    "wait_child",
    "wait_webhooks_delivered",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = float(os.environ.get("EXAMPLE_TIMEOUT_S", "30"))
RUN_ID = uuid.uuid4().hex[:8]  # makes a request unique to this run where the README's would repeat


def _cluster_json() -> dict[str, Any]:
    path = Path(os.environ.get("EZT_LOCAL_DIR") or REPO / ".local") / "cluster.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _settings() -> tuple[str, str]:
    key, url = os.environ.get("EZTHROTTLE_API_KEY"), os.environ.get("EZTHROTTLE_URL")
    if not (key and url):
        cluster = _cluster_json()
        key = key or cluster.get("api_key")
        url = url or next(iter((cluster.get("regions") or {}).values()), None)
    if not key:
        raise SystemExit(
            "no API key: set EZTHROTTLE_API_KEY (and EZTHROTTLE_URL), or run `make up-local` first"
        )
    return key, url or "http://127.0.0.1:8701"


API_KEY, EZTHROTTLE_URL = _settings()


# -- loopback stand-ins ----------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers any request; records it on the server."""

    server: "_StandIn"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record(self.command, self.path, dict(self.headers), body)
        status, delay_s = 200, 0.0
        match = re.search(r"/status/(\d{3})(?:[/?]|$)", self.path)
        if match and self.server.httpbin:
            status = int(match.group(1))
        match = re.search(r"/delay/(\d+(?:\.\d+)?)(?:[/?]|$)", self.path)
        if match and self.server.httpbin:
            delay_s = min(float(match.group(1)), 10.0)
        match = re.search(r"/flaky/(\d{3})/(\d+)(?:[/?]|$)", self.path)
        if match and self.server.httpbin and self.server.seen(self.path) <= int(match.group(2)):
            status = int(match.group(1))
        time.sleep(delay_s)
        answer = json.dumps(
            {"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace")}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


class _StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, httpbin: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.httpbin = httpbin
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout) leaves a broken pipe behind

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})

    def seen(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"] == path)


_stand_ins: dict[str, _StandIn] = {}


def _base(env: str, httpbin: bool) -> str:
    base = os.environ.get(env)
    if base:
        return base.rstrip("/")
    if env not in _stand_ins:
        _stand_ins[env] = _StandIn(httpbin)
    return _stand_ins[env].url


def target(path: str) -> str:
    """The loopback stand-in for a README target: ``target("api.stripe.com/charges")``."""
    return f"{_base('EXAMPLE_TARGET', httpbin=True)}/{path.lstrip('/')}"


def webhook(path: str) -> str:
    """The loopback stand-in for a README webhook: ``webhook("payment-complete")``."""
    return f"{_base('EXAMPLE_WEBHOOK', httpbin=False)}/{path.lstrip('/')}"


# -- serving an example's own app --------------------------------------------------


def serve_wsgi(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve a WSGI app (Flask) on a free loopback port: ``(base_url, stop)``."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", stop


def serve_asgi(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve an ASGI app (FastAPI) with uvicorn on a free loopback port: ``(base_url, stop)``."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start")

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


# -- checks ----------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    """Poll ``condition`` until it is truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def wait_final(client: Any, job_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The job's view once it is final (``client.wait`` follows its event stream)."""
    return client.wait(job_id, timeout_s=timeout_s)


def wait_child(client: Any, job_id: str, relation: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The final view of the job that the server started as ``relation`` of ``job_id``."""

    def child() -> Optional[str]:
        tree = (client.get_job(job_id).get("workflow") or {}).get("children") or []
        return next((c["job_id"] for c in tree if c["relation"] == relation), None)

    child_id = wait_until(child, f"the {relation} of {job_id}", timeout_s)
    return wait_final(client, child_id, timeout_s)


def wait_webhooks_delivered(client: Any, job_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The job's view once its webhook quorum is met."""

    def met() -> Optional[dict[str, Any]]:
        view = client.get_job(job_id)
        return view if (view.get("webhooks") or {}).get("quorum_met") else None

    return wait_until(met, f"the webhooks of {job_id}", timeout_s)

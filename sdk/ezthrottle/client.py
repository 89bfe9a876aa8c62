"""Clients for the EZThrottle API: ``EZThrottle`` (sync) and ``AsyncEZThrottle``.

As in httpx, ``BaseClient`` holds everything without I/O: settings, request
building, response and error mapping, edge order, and every call written
once as a flow (``_flow.py``) that yields its I/O as effects (``_Send``,
``_Sleep``, ...). The two clients only perform the effects, blocking or
awaiting, and expose the flows as their methods.

Every API call is safe to repeat, so a call that fails to connect is retried
on the next edge (see ``_edges.py``), in up to ``MAX_RETRIES + 1`` rounds
over all edges with a short backoff between rounds. The request is built
once, so the retry carries the same payload and idempotent key: job
submissions are deduplicated by the server (by ``idempotent_key``, custom or
UNIQUE, or by a hash of the request under HASH), so a repeat answers
``"duplicate"`` with the first job's id and never makes a second job; GET
and DELETE are idempotent, and setting webhook secrets sets the same value
again. Direct calls (``request()``) are never retried.

``wait(job_id, timeout_s)`` follows the job's event stream (``_waiting.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, Union
from urllib.parse import quote, urlencode

import httpx

from . import _flow, _waiting
from ._edges import HEALTH_PATH, REGIONS_PATH, EdgeSet, EdgeUrls, edges_from_regions, parse_edge_urls
from ._flow import Flow
from ._payload import build_job_payload
from ._version import __version__
from .exceptions import (
    AuthenticationError,
    ConnectionError,
    EZThrottleError,
    ForwardToEZThrottle,
    NotFoundError,
    TimeoutError,
    ValidationError,
    error_from_response,
)
from .forwarding import auto_forward
from .step import Step, StepType

__all__ = [
    "BaseClient",
    "EZThrottle",
    "AsyncEZThrottle",
    "DEFAULT_BASE_URL",
    # importable from here, as from the published 1.x client module
    "auto_forward",
    "EZThrottleError",
    "TimeoutError",
    "ForwardToEZThrottle",
]

log = logging.getLogger("ezthrottle")

DEFAULT_BASE_URL = "http://127.0.0.1:8701"
API_KEY_ENV = "EZTHROTTLE_API_KEY"
BASE_URL_ENV = "EZTHROTTLE_URL"
USER_AGENT = f"ezthrottle-python/{__version__}"
MAX_RETRIES = 2
RETRY_BACKOFF_S = 0.1  # before round n: RETRY_BACKOFF_S * 2**n, with jitter
MIN_SECRET_CHARS = 16
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_PROBE_TIMEOUT_S = 2.0
DEFAULT_WAIT_TIMEOUT_S = 300.0
DEFAULT_POLL_INTERVAL_S = 2.0
_JOBS = "/api/v1/jobs"
MAX_BATCH_JOBS = 100  # jobs per POST /api/v1/jobs/batch: the server's default EZT_MAX_BATCH_JOBS
NO_BATCH_ROUTE = (404, 405)  # what a server without POST /api/v1/jobs/batch answers it: submit_many sends one job per request
_JOB_ARGS = frozenset(inspect.signature(build_job_payload).parameters)
_JOB_INDEX = re.compile(r"\bjobs\[(\d+)\]")
_SCHEDULES = "/api/v1/schedules"
_SECRETS = "/api/v1/webhook-secrets"
_SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
# Connection failures: the request cannot have been processed, or is safe
# to repeat anyway. A read timeout is not retried: the server may be slow.
_RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)

T = TypeVar("T")
if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")


class _NoEventStream(Exception):
    """The edge has no event stream route (404 for an existing job): poll instead."""


@dataclass(frozen=True)
class _ApiCall:
    """One API request, built without I/O."""

    method: str
    path: str
    json: Optional[dict[str, Any]] = None
    not_found: Optional[str] = None  # message for a 404, when it has a clear meaning


# -- effects: the I/O a flow asks its client for; ``io`` names the client's method


@dataclass(frozen=True)
class _Send:
    """Send a request; the outcome is its ``httpx.Response``, unread if ``stream``."""

    io: ClassVar[str] = "_send"
    method: str
    url: str
    options: Mapping[str, Any]  # httpx's request arguments: json, headers, timeout...
    stream: bool = False
    api: bool = False  # to an edge: the async client queues it for a connection slot


@dataclass(frozen=True)
class _Sleep:
    """Pause the flow (the async client: without blocking the loop)."""

    io: ClassVar[str] = "_sleep"
    seconds: float


@dataclass(frozen=True)
class _ReadBody:
    """Read a streamed response's whole body, so its error can be mapped."""

    io: ClassVar[str] = "_read_body"
    response: httpx.Response


@dataclass(frozen=True)
class _ReadChunks:
    """Hand the body of a streamed response to ``feed``, chunk by chunk, until it returns True."""

    io: ClassVar[str] = "_read_chunks"
    response: httpx.Response
    feed: Callable[[bytes], bool]


@dataclass(frozen=True)
class _Close:
    """Close a streamed response (a flow does it in ``finally``, as ``with`` would)."""

    io: ClassVar[str] = "_close"
    response: httpx.Response


@dataclass(frozen=True)
class _Gather:
    """Run flows (the async client: concurrently); the outcome is the list of their results."""

    io: ClassVar[str] = "_gather"
    flows: list[Flow[Any]]


@dataclass(frozen=True)
class _Exclusive:
    """Run a flow; the async client runs one at a time, so concurrent callers share its work."""

    io: ClassVar[str] = "_exclusive"
    flow: Flow[Any]


@dataclass(frozen=True)
class _Resolve:
    """A value from the caller's code; the async client awaits it if it is awaitable."""

    io: ClassVar[str] = "_resolve"
    value: Any


@dataclass(frozen=True)
class _Coalesce:
    """Submit a job's payload, perhaps together with others (``coalesce_submits``); the outcome is submit_job's answer."""

    io: ClassVar[str] = "_coalesce"
    payload: dict[str, Any]


# what a job refused in a batch's answer would have been answered alone (the batch gives its code, not its status)
_REFUSAL_STATUS = {"quota_exceeded": 429, "overloaded": 429, "rate_limited": 429, "internal_error": 500}


def _refusal(error: Any) -> EZThrottleError:
    """The exception ``submit_job`` raises for a job a batch's answer refused (``{"code", "message", "retry_after_s"?}``)."""
    if not isinstance(error, Mapping):
        return EZThrottleError(f"the server refused a job with {error!r}")
    status = _REFUSAL_STATUS.get(str(error.get("code")), 503)
    retry_after = error.get("retry_after_s")
    headers = httpx.Headers({"retry-after": str(retry_after)} if retry_after is not None else {})
    return error_from_response(status, json.dumps({"error": dict(error)}).encode(), headers)


class BaseClient:
    """Settings and the I/O-free half of both clients."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        tracktags_url: Optional[str] = None,
        ezthrottle_url: Optional[str] = None,
        webhook_server: Any = None,
        start_webhook_server: bool = False,
        webhook_port: int = 5000,
        *,
        base_url: Optional[EdgeUrls] = None,
        timeout_s: float = 30,
        discover_edges: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        coalesce_submits: bool = False,
    ) -> None:
        """Configure the client.

        ``api_key`` defaults to ``$EZTHROTTLE_API_KEY``. ``base_url`` is an
        edge URL, a list of them or a comma-separated string; it defaults to
        ``$EZTHROTTLE_URL`` (comma-separated allowed), then
        ``http://127.0.0.1:8701``. With several edges the client uses the
        nearest healthy one and fails over to the next; ``discover_edges=True``
        also asks the edges for the others (``GET /api/v1/regions``).
        ``max_connections`` bounds the connection pool, so ``asyncio.gather``
        over thousands of calls opens at most that many connections.
        ``coalesce_submits=True`` (async client): the ``submit_job`` calls
        made in one turn of the event loop go out as one ``POST
        /api/v1/jobs/batch`` (up to 100 jobs; one call alone is one ``POST
        /api/v1/jobs``), and each call still answers or raises as it would
        alone. It adds no wait: a call made while nothing else is submitting
        goes at once. The sync client submits one job per call either way.

        The positional parameters after ``api_key`` are the published SDK
        1.3.0's, so old code constructs unchanged: ``ezthrottle_url``, else
        ``tracktags_url`` (where 1.3.0 sent its requests), is the edge URL when
        ``base_url`` is not given. A ``tracktags_url`` that is not used, and
        the embedded webhook server options, are ignored with a
        ``DeprecationWarning`` (use ``ezthrottle.WebhookHandler`` instead).
        """
        legacy_url = ezthrottle_url or tracktags_url
        ignored = [
            name
            for name, given in (
                ("tracktags_url", tracktags_url is not None and tracktags_url != legacy_url),
                ("webhook_server", webhook_server is not None),
                ("start_webhook_server", bool(start_webhook_server)),
                ("webhook_port", webhook_port != 5000),
            )
            if given
        ]
        if ignored:
            warnings.warn(
                f"EZThrottle(): {', '.join(ignored)} ignored; this SDK talks to the "
                "EZThrottle edges directly and has no embedded webhook server "
                "(see ezthrottle.WebhookHandler)",
                DeprecationWarning,
                stacklevel=2,
            )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise AuthenticationError(f"no API key: pass EZThrottle(api_key=...) or set ${API_KEY_ENV}")
        urls = base_url or legacy_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        for name, value in (("timeout_s", timeout_s), ("probe_timeout_s", probe_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"{name} must be a number of seconds > 0, got {value!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValidationError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if not isinstance(coalesce_submits, bool):
            raise ValidationError(f"coalesce_submits must be True or False, got {coalesce_submits!r}")
        self._api_key = key
        self.edges = EdgeSet(parse_edge_urls(urls, "base_url"), discover=discover_edges)
        self.timeout_s = float(timeout_s)
        self.probe_timeout_s = float(probe_timeout_s)
        self.max_connections = max_connections
        self._batch_route = True  # until a server answers that it has no POST /api/v1/jobs/batch (submit_many)
        self.coalesce_submits = coalesce_submits
        self._http = self._open_pool()

    @property
    def base_url(self) -> str:
        """The edge the next call goes to first (the nearest healthy one)."""
        return self.edges.first

    def _open_pool(self) -> Any:
        """The httpx client (sync or async) that sends everything."""
        raise NotImplementedError

    def _pool_limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=min(self.max_connections, 20),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} api_key={self._api_key[:4]}****>"

    # -- request building ------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        # Sent on API calls only, never on direct calls to third-party targets.
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    def _attempts(self) -> Iterator[tuple[str, Optional[float]]]:
        """(edge, sleep before the next one or None) for each try of one call."""
        delays = self._retry_delays_s()
        for round_ in range(MAX_RETRIES + 1):
            order = self.edges.order
            for i, edge in enumerate(order):
                last_of_round = i == len(order) - 1
                if not last_of_round:
                    yield edge, 0.0
                else:
                    yield edge, delays[round_] if round_ < MAX_RETRIES else None

    def _unreachable(self, exc: httpx.RequestError, tried: list[str]) -> EZThrottleError:
        edges = list(dict.fromkeys(tried))
        target = edges[0] if len(edges) == 1 else f"any edge ({', '.join(edges)})"
        return self._transport_error(exc, target)

    @staticmethod
    def _submit_call(payload: dict[str, Any]) -> _ApiCall:
        return _ApiCall("POST", _JOBS, json=payload)

    @staticmethod
    def _get_job_call(job_id: str) -> _ApiCall:
        if not isinstance(job_id, str) or not job_id:
            raise ValidationError(f"job_id must be a non-empty string, got {job_id!r}")
        return _ApiCall("GET", f"{_JOBS}/{quote(job_id, safe='')}", not_found=f"no job {job_id!r}")

    @staticmethod
    def _list_query(
        status: Union[str, Iterable[str], None],
        domain: Optional[str],
        created_after: Optional[int],
        created_before: Optional[int],
        metadata: Optional[Mapping[str, Any]],
        root_job_id: Optional[str],
        limit: int,
    ) -> list[tuple[str, str]]:
        """``GET /api/v1/jobs``'s query for these filters (checked here; the server checks them too)."""
        query: list[tuple[str, str]] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            if not statuses or not all(isinstance(s, str) and s for s in statuses):
                raise ValidationError(f"status must be a status or a list of them, got {status!r}")
            query.append(("status", ",".join(statuses)))
        for name, text in (("domain", domain), ("root_job_id", root_job_id)):
            if text is not None:
                if not isinstance(text, str) or not text:
                    raise ValidationError(f"{name} must be a non-empty string, got {text!r}")
                query.append((name, text))
        for name, ms in (("created_after", created_after), ("created_before", created_before)):
            if ms is not None:
                if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
                    raise ValidationError(f"{name} must be ms since the epoch (an int >= 0), got {ms!r}")
                query.append((name, str(ms)))
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not key or isinstance(value, (dict, list)):
                raise ValidationError(f"metadata filters are {{key: value}} with scalar values, got {key!r}: {value!r}")
            # strings as they are; other scalars as JSON, as the server compares them (3, true, null)
            text = value if isinstance(value, str) else json.dumps(value)
            query.append((f"metadata.{key}", text))
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise ValidationError(f"limit must be an int from 1 to 200, got {limit!r}")
        query.append(("limit", str(limit)))
        return query

    @staticmethod
    def _domain_call(host: str) -> _ApiCall:
        if not isinstance(host, str) or not host:
            raise ValidationError(f"host must be a non-empty string (host or host:port), got {host!r}")
        return _ApiCall("GET", f"/api/v1/domains/{quote(host, safe=':[]')}")

    @staticmethod
    def _flow_call(key: str, action: str = "") -> _ApiCall:
        if not isinstance(key, str) or not key:
            raise ValidationError(f"key must be a non-empty string, got {key!r}")
        path = f"/api/v1/flow-control/{quote(key, safe='')}" + (f"/{action}" if action else "")
        return _ApiCall("POST" if action else "GET", path, not_found=f"no flow-control key {key!r} for this API key")

    @staticmethod
    def _schedule_call(method: str, schedule_id: Optional[str] = None, body: Optional[dict[str, Any]] = None) -> _ApiCall:
        if schedule_id is None:
            return _ApiCall(method, _SCHEDULES, json=body)
        if not isinstance(schedule_id, str) or not schedule_id:
            raise ValidationError(f"schedule_id must be a non-empty string, got {schedule_id!r}")
        path = f"{_SCHEDULES}/{quote(schedule_id, safe='')}"
        return _ApiCall(method, path, json=body, not_found=f"no schedule {schedule_id!r} for this API key")

    @staticmethod
    def _schedule_body(
        job: Any = None,
        cron: Optional[str] = None,
        every_s: Optional[int] = None,
        timezone: Optional[str] = None,
        overlap: Optional[str] = None,
        paused: Optional[bool] = None,
    ) -> dict[str, Any]:
        """A schedule's fields as the API takes them; ``job`` a payload (dict) or a ``Step``. The server checks the rest."""
        if cron is not None and every_s is not None:
            raise ValidationError("give cron or every_s, not both")
        if every_s is not None and (isinstance(every_s, bool) or not isinstance(every_s, int) or every_s < 1):
            raise ValidationError(f"every_s must be an int >= 1, got {every_s!r}")
        if overlap is not None and overlap not in ("skip", "allow"):
            raise ValidationError(f"overlap must be 'skip' or 'allow', got {overlap!r}")
        body: dict[str, Any] = {}
        if job is not None:
            payload = dict(job._build_job_payload()) if hasattr(job, "_build_job_payload") else dict(job)
            payload.pop("idempotent_key", None)  # each tick gets its own (sched:<id>:<tick ms>)
            body["job"] = payload
        for name, value in (("cron", cron), ("every_s", every_s), ("timezone", timezone), ("overlap", overlap), ("paused", paused)):
            if value is not None:
                body[name] = value
        return body

    @staticmethod
    def _list_jobs_call(query: list[tuple[str, str]], cursor: Optional[str]) -> _ApiCall:
        return _ApiCall("GET", f"{_JOBS}?{urlencode(query + ([('cursor', cursor)] if cursor else []))}")

    @staticmethod
    def _cancel_call(job_id: str, after_attempt: bool) -> _ApiCall:
        if not isinstance(job_id, str) or not job_id:
            raise ValidationError(f"job_id must be a non-empty string, got {job_id!r}")
        if not isinstance(after_attempt, bool):
            raise ValidationError(f"after_attempt must be a bool, got {after_attempt!r}")
        query = "?after_attempt=true" if after_attempt else ""
        return _ApiCall("DELETE", f"{_JOBS}/{quote(job_id, safe='')}{query}", not_found=f"no job {job_id!r}")

    @staticmethod
    def _cancel_many_call(job_ids: list[str], after_attempt: bool) -> _ApiCall:
        ids = list(job_ids) if not isinstance(job_ids, str) else None
        if not ids or len(ids) > 1000 or not all(isinstance(i, str) and i for i in ids):
            raise ValidationError(f"job_ids must be a list of 1 to 1000 job ids, got {job_ids!r}")
        if not isinstance(after_attempt, bool):
            raise ValidationError(f"after_attempt must be a bool, got {after_attempt!r}")
        return _ApiCall("POST", f"{_JOBS}/cancel", json={"job_ids": ids, "after_attempt": after_attempt})

    @staticmethod
    def _cancel_matching_call(query: list[tuple[str, str]], after_attempt: bool) -> _ApiCall:
        if not isinstance(after_attempt, bool):
            raise ValidationError(f"after_attempt must be a bool, got {after_attempt!r}")
        flt = {name: value for name, value in query if name != "limit"}
        return _ApiCall("POST", f"{_JOBS}/cancel", json={"filter": flt, "after_attempt": after_attempt})

    @staticmethod
    def _cancel_progress_call(action_id: str) -> _ApiCall:
        if not isinstance(action_id, str) or not action_id:
            raise ValidationError(f"action_id must be a non-empty string, got {action_id!r}")
        return _ApiCall("GET", f"{_JOBS}/cancel/{quote(action_id, safe='')}", not_found=f"no bulk cancel {action_id!r}")

    @staticmethod
    def _claim_call(job_id: str, step_id: str) -> _ApiCall:
        for name, value in (("job_id", job_id), ("step_id", step_id)):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
        path = f"{_JOBS}/{quote(job_id, safe='')}/frugal-claims/{quote(step_id, safe='')}"
        return _ApiCall("POST", path, not_found=f"no job {job_id!r}")

    @staticmethod
    def _claimed(error: EZThrottleError) -> bool:
        """A 409 on a claim: another handler runs the step."""
        return error.status_code == 409

    @staticmethod
    def _events_path(job_id: str) -> str:
        return f"{_JOBS}/{quote(job_id, safe='')}/events"

    @staticmethod
    def _wait_args(timeout_s: float, poll_interval_s: float) -> tuple[float, float]:
        for name, value in (("timeout_s", timeout_s), ("poll_interval_s", poll_interval_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"{name} must be a number of seconds > 0, got {value!r}")
        return float(timeout_s), float(poll_interval_s)

    def _stream_timeout(self, remaining_s: float) -> httpx.Timeout:
        # Keep-alives arrive well within this; silence for the whole remaining
        # time means the wait is over anyway.
        # Waits beyond max_connections queue for a connection until their deadline.
        remaining_s = max(0.01, remaining_s)
        return httpx.Timeout(self.timeout_s, read=remaining_s, pool=remaining_s)

    @staticmethod
    def _stream_error(response: httpx.Response, path: str) -> Optional[EZThrottleError]:
        """None for a usable event stream, else the error to raise."""
        if response.status_code != 200:
            return error_from_response(response.status_code, response.content, response.headers)
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "text/event-stream":
            return EZThrottleError(f"GET {path}: expected text/event-stream, got {ctype!r}")
        return None

    @staticmethod
    def _create_secret_call(primary_secret: str, secondary_secret: Optional[str]) -> _ApiCall:
        payload = {"primary_secret": _check_secret(primary_secret, "primary_secret")}
        if secondary_secret:
            payload["secondary_secret"] = _check_secret(secondary_secret, "secondary_secret")
        return _ApiCall("POST", _SECRETS, json=payload)

    @staticmethod
    def _secret_call(method: str) -> _ApiCall:
        return _ApiCall(
            method,
            _SECRETS,
            not_found="No webhook secrets configured. Call create_webhook_secret() first.",
        )

    # -- response handling -----------------------------------------------------

    @staticmethod
    def _result(call: _ApiCall, response: httpx.Response) -> dict[str, Any]:
        """The JSON body of a 2xx answer, or the matching exception."""
        if response.is_success:
            if not response.content:
                return {}
            try:
                data: dict[str, Any] = response.json()
            except ValueError:
                raise EZThrottleError(
                    f"{call.method} {call.path}: the server answered HTTP {response.status_code} with a body that is not JSON",
                    status_code=response.status_code,
                ) from None
            return data
        error = error_from_response(response.status_code, response.content, response.headers)
        if isinstance(error, NotFoundError) and call.not_found:
            error = NotFoundError(f"{call.not_found} (HTTP 404)", code=error.code, status_code=404)
        raise error

    @staticmethod
    def _transport_error(exc: httpx.RequestError, target: str) -> EZThrottleError:
        # A connect timeout never reached the server: it is a ConnectionError
        # (forward_or_fallback's "unreachable"), not a slow answer.
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return TimeoutError(f"no answer from {target} in time: {exc!r}")
        return ConnectionError(f"cannot reach {target}: {exc!r}")

    @staticmethod
    def _retry_delays_s() -> list[float]:
        """Sleep before each retry: exponential backoff, +-50% jitter."""
        return [RETRY_BACKOFF_S * 2**n * random.uniform(0.5, 1.5) for n in range(MAX_RETRIES)]

    # -- flows: every call, written once; the clients perform their effects -------

    def _run(self, flow: Flow[T]) -> Any:
        """Run ``flow`` with this client's I/O (the async client returns an awaitable)."""
        raise NotImplementedError

    def _perform(self, effect: Any) -> Any:
        return getattr(self, effect.io)(effect)

    def _ensure_edges(self) -> Flow[None]:
        """Discover and rank the edges when due (first call, then every few minutes)."""
        if self.edges.discover_pending or self.edges.probe_due():
            yield _Exclusive(self._update_edges())

    def _update_edges(self) -> Flow[None]:
        if self.edges.discover_pending:
            self.edges.add((yield from self._discover()))
        if self.edges.probe_due():
            order = self.edges.order
            rtts = yield _Gather([self._probe(edge) for edge in order])
            self.edges.ranked(dict(zip(order, rtts)))

    def _discover(self) -> Flow[list[str]]:
        options = {"headers": self._auth_headers(), "timeout": self.probe_timeout_s}
        for seed in self.edges.order:
            try:
                response = yield _Send("GET", seed + REGIONS_PATH, options)
                if response.is_success:
                    return edges_from_regions(response.json())
            except (httpx.HTTPError, ValueError):
                continue
        return []

    def _probe(self, edge: str) -> Flow[Optional[float]]:
        """Round-trip time of ``GET /healthz`` in seconds, or None if the edge is not healthy."""
        started = time.perf_counter()
        try:
            response = yield _Send("GET", edge + HEALTH_PATH, {"timeout": self.probe_timeout_s})
        except httpx.HTTPError:
            return None
        return time.perf_counter() - started if response.status_code == 200 else None

    def _api(self, call: _ApiCall) -> Flow[dict[str, Any]]:
        """One API call, on the next edge while edges fail to connect (see the module doc)."""
        yield from self._ensure_edges()
        tried: list[str] = []
        for edge, delay_s in self._attempts():
            tried.append(edge)
            options = {"json": call.json, "headers": self._auth_headers()}
            try:
                response = yield _Send(call.method, edge + call.path, options, api=True)
            except _RETRYABLE as exc:
                self.edges.demote(edge)
                if delay_s is None:
                    raise self._unreachable(exc, tried) from exc
                yield _Sleep(delay_s)
                continue
            except httpx.RequestError as exc:
                raise self._transport_error(exc, edge) from exc
            return self._result(call, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _submit_payload(self, payload: dict[str, Any]) -> Flow[dict[str, Any]]:
        """Submit a payload that ``Step`` built and checked (it may carry ``type``)."""
        return (yield from self._api(self._submit_call(payload)))

    def _claim_frugal_step(self, job_id: str, step_id: str) -> Flow[bool]:
        """Claim a FRUGAL step of a finished job; True if this caller is to run it.

        Exactly one claim per step succeeds, whoever asks and however often the
        webhook that carried it is delivered (``WebhookHandler`` calls this).
        """
        try:
            yield from self._api(self._claim_call(job_id, step_id))
        except EZThrottleError as error:
            if self._claimed(error):
                return False
            raise
        return True

    def _wait(
        self,
        job_id: str,
        timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> Flow[dict[str, Any]]:
        """Wait until the job is final (``success``, ``failed``, ``cancelled`` or ``expired``); return its view.

        Follows the job's event stream (``GET /api/v1/jobs/{id}/events``),
        reconnecting (to the next edge if need be) when it breaks. An edge
        without event streams is polled instead, backing off up to
        ``poll_interval_s``. Raises ``TimeoutError`` after ``timeout_s`` and
        ``NotFoundError`` for an unknown job. The async client never blocks
        the loop.
        """
        get_call = self._get_job_call(job_id)
        timeout_s, poll_interval_s = self._wait_args(timeout_s, poll_interval_s)
        deadline = time.monotonic() + timeout_s
        watch = _waiting.JobWatch(job_id)
        yield from self._ensure_edges()
        reconnects = _waiting.backoff_s(_waiting.RECONNECT_FIRST_S, _waiting.RECONNECT_MAX_S)
        failures = 0
        while True:
            edge = self.edges.first
            try:
                finished = yield from self._follow(edge, job_id, watch, deadline, timeout_s)
            except _NoEventStream:
                log.debug("no event stream on %s; polling job %s", edge, job_id)
                polled = yield from self._poll(get_call, watch, deadline, timeout_s, poll_interval_s)
                return polled
            except _RETRYABLE as exc:
                self.edges.demote(edge)
                failures += 1
                if failures > MAX_RETRIES * len(self.edges.order):
                    raise self._unreachable(exc, [edge]) from exc
            except httpx.TimeoutException as exc:
                raise TimeoutError(watch.timeout_message(timeout_s)) from exc
            else:
                if finished is not None:
                    if finished.view is not None:
                        return finished.view
                    return (yield from self._api(get_call))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(watch.timeout_message(timeout_s))
            yield _Sleep(min(next(reconnects), remaining))

    def _follow(
        self,
        edge: str,
        job_id: str,
        watch: _waiting.JobWatch,
        deadline: float,
        timeout_s: float,
    ) -> Flow[Optional[_waiting.Finished]]:
        """Read one connection of the event stream; None if it ends before the job does."""
        path = self._events_path(job_id)
        headers = {**self._auth_headers(), **_SSE_HEADERS}
        timeout = self._stream_timeout(deadline - time.monotonic())
        options = {"headers": headers, "timeout": timeout}
        response = yield _Send("GET", edge + path, options, stream=True)
        try:
            if response.status_code == 404:
                yield _ReadBody(response)
                # NotFoundError if the job is unknown
                yield from self._api(self._get_job_call(job_id))
                raise _NoEventStream
            if response.status_code != 200:
                yield _ReadBody(response)
            error = self._stream_error(response, path)
            if error is not None:
                raise error
            reader = _waiting.StreamReader(watch, deadline, timeout_s)
            yield _ReadChunks(response, reader.feed)
            return reader.finished
        finally:
            yield _Close(response)

    def _poll(
        self,
        get_call: _ApiCall,
        watch: _waiting.JobWatch,
        deadline: float,
        timeout_s: float,
        poll_interval_s: float,
    ) -> Flow[dict[str, Any]]:
        for delay_s in _waiting.backoff_s(_waiting.POLL_FIRST_S, poll_interval_s):
            view = yield from self._api(get_call)
            watch.last_status = view.get("status")
            if _waiting.is_final(view):
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(watch.timeout_message(timeout_s))
            yield _Sleep(min(delay_s, remaining))
        raise AssertionError("unreachable")  # pragma: no cover

    def _submit_job(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        webhooks: Optional[list[dict[str, Any]]] = None,
        webhook_quorum: int = 1,
        regions: Optional[list[str]] = None,
        region_policy: str = "fallback",
        execution_mode: str = "race",
        retry_policy: Optional[dict[str, Any]] = None,
        fallback_job: Optional[dict[str, Any]] = None,
        on_success: Optional[dict[str, Any]] = None,
        on_failure: Optional[dict[str, Any]] = None,
        on_failure_timeout_ms: Optional[int] = None,
        idempotent_key: Optional[str] = None,
        retry_at: Optional[int] = None,
    ) -> Flow[dict[str, Any]]:
        """Submit a job; return ``{"job_id", "status", "idempotent_key"}``.

        ``status`` is ``"queued"``, ``"racing"`` (queued in several regions
        with ``execution_mode="race"``: the first to finish wins), or
        ``"duplicate"`` (with the first job's id) when a job with the same
        idempotent key exists.
        """
        payload = build_job_payload(
            url,
            method,
            headers,
            body,
            metadata,
            webhooks,
            webhook_quorum,
            regions,
            region_policy,
            execution_mode,
            retry_policy,
            fallback_job,
            on_success,
            on_failure,
            on_failure_timeout_ms,
            idempotent_key,
            retry_at,
        )
        if self.coalesce_submits:
            answer: dict[str, Any] = yield _Coalesce(payload)
            return answer
        return (yield from self._api(self._submit_call(payload)))

    def _submit_many(
        self, jobs: Iterable[Union[Mapping[str, Any], Step]], *, batch_size: int = MAX_BATCH_JOBS
    ) -> Flow[list[dict[str, Any]]]:
        """Submit many jobs, ``batch_size`` per request (``POST /api/v1/jobs/batch``); one result per job, in order.

        Each job is a dict of ``submit_job``'s arguments (``{"url": ..., "method":
        "POST", "body": ...}``) or a PERFORMANCE ``Step``. Every job is checked
        before anything is sent (``ValidationError`` naming ``jobs[i]``). Each
        result is what ``submit_job`` answers (``{"job_id", "status",
        "idempotent_key"}``, ``status`` ``"duplicate"`` for a repeated key,
        within the list too), or ``{"error": {"code", "message",
        "retry_after_s"?}}`` for a job the server refused at acceptance
        (``quota_exceeded``, ``overloaded``, ``unavailable``): the others stand.
        The async client sends the requests concurrently (within
        ``max_connections``). A request refused as a whole raises as
        ``submit_job`` would, once every request has ended, its message naming
        the job by its index in ``jobs`` (``ValidationError`` for a job only
        the server finds invalid: none of that request's jobs was written);
        the other requests' jobs may have been accepted, and submitting the
        same jobs again is safe: their idempotent keys (HASH by default) answer
        those ``"duplicate"``. A server without the batch route (an older edge:
        404 or 405) gets one ``POST /api/v1/jobs`` per job instead, from then
        on for this client, concurrently: the same kinds of results, but which
        of two jobs with one key is the duplicate, and which jobs a quota
        running out refuses, follows their arrival; a job it refuses as
        invalid raises once every job has ended, and the others may stand.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        payloads = [_batch_job(job, i) for i, job in enumerate(jobs)]
        chunks = [(start, payloads[start : start + batch_size]) for start in range(0, len(payloads), batch_size)]
        answers = yield _Gather([self._submit_batch(chunk, start) for start, chunk in chunks])
        for answer in answers:  # every request has ended: what was accepted is settled
            if isinstance(answer, EZThrottleError):
                raise answer
        return [result for answer in answers for result in answer]

    def _submit_batch(self, payloads: list[dict[str, Any]], start: int) -> Flow[Union[list[dict[str, Any]], EZThrottleError]]:
        """One ``POST /api/v1/jobs/batch`` of ``payloads``, the jobs from index ``start`` of ``submit_many``'s;
        its results, or the error that refused it (returned: the other requests go on)."""
        if not self._batch_route:
            return (yield from self._submit_each(payloads))
        call = _ApiCall("POST", _JOBS + "/batch", json={"jobs": payloads})
        try:
            answer = yield from self._api(call)
        except EZThrottleError as error:
            if error.status_code in NO_BATCH_ROUTE:  # a server without the route (an older edge): one job per request
                self._batch_route = False
                return (yield from self._submit_each(payloads))
            if start:  # the server counts from this request's first job
                error.message = _JOB_INDEX.sub(lambda m: f"jobs[{int(m.group(1)) + start}]", error.message)
                error.args = (error.message, *error.args[1:])
            return error
        results = answer.get("jobs")
        if not isinstance(results, list) or len(results) != len(payloads):
            raise EZThrottleError(f"POST {call.path}: the server answered {answer!r} for {len(payloads)} jobs")
        return results

    def _submit_each(self, payloads: list[dict[str, Any]]) -> Flow[Union[list[dict[str, Any]], EZThrottleError]]:
        """``submit_many``'s jobs one per ``POST /api/v1/jobs`` (a server without the batch route), concurrently;
        a job refused at acceptance (429, 503) is an error in its place, as in a batch's answer."""
        answers = yield _Gather([self._submit_one(payload) for payload in payloads])
        results: list[dict[str, Any]] = []
        for answer in answers:
            if isinstance(answer, EZThrottleError):
                return answer
            results.append(answer)
        return results

    def _submit_together(self, payloads: list[dict[str, Any]]) -> Flow[list[Union[dict[str, Any], EZThrottleError]]]:
        """``submit_job``'s answer for each payload, or the exception it would raise, from one ``POST
        /api/v1/jobs/batch`` (``coalesce_submits``). Each job that request cannot answer for on its own (one payload,
        a server without the route, a job the server finds invalid: the whole request is refused) goes alone, so
        its caller gets exactly its own answer; a refusal of the request as such (a key, admission) is everyone's."""
        if len(payloads) > 1 and self._batch_route:
            call = _ApiCall("POST", _JOBS + "/batch", json={"jobs": payloads})
            try:
                answer = yield from self._api(call)
            except EZThrottleError as error:
                if error.status_code in NO_BATCH_ROUTE:
                    self._batch_route = False
                elif error.status_code not in (400, 413, 422):
                    return [error] * len(payloads)
            else:
                results = answer.get("jobs")
                if not isinstance(results, list) or len(results) != len(payloads):
                    return [EZThrottleError(f"POST {call.path}: the server answered {answer!r} for {len(payloads)} jobs")] * len(payloads)
                return [_refusal(r["error"]) if isinstance(r, Mapping) and "error" in r else r for r in results]
        answers: list[Union[dict[str, Any], EZThrottleError]] = yield _Gather([self._submit_alone(p) for p in payloads])
        return answers

    def _submit_alone(self, payload: dict[str, Any]) -> Flow[Union[dict[str, Any], EZThrottleError]]:
        """One ``POST /api/v1/jobs``: its answer, or the exception ``submit_job`` would raise (returned, not raised)."""
        try:
            answer: dict[str, Any] = yield from self._api(self._submit_call(payload))
        except EZThrottleError as error:
            return error
        return answer

    def _submit_one(self, payload: dict[str, Any]) -> Flow[Union[dict[str, Any], EZThrottleError]]:
        """``_submit_alone``, with a refusal at acceptance (429, 503) as a batch's answer gives it: ``{"error": ...}``."""
        answer = yield from self._submit_alone(payload)
        if not isinstance(answer, EZThrottleError) or answer.status_code not in (429, 503):
            return answer
        refused: dict[str, Any] = {"code": answer.code or "unavailable", "message": str(answer)}
        retry_after_s = getattr(answer, "retry_after_s", None)
        if retry_after_s is not None:
            refused["retry_after_s"] = max(0, round(retry_after_s))
        return {"error": refused}

    def _get_job(self, job_id: str) -> Flow[dict[str, Any]]:
        """A job's state: ``status``, ``attempts``, ``result`` and more."""
        return (yield from self._api(self._get_job_call(job_id)))

    def _cancel_job(self, job_id: str, after_attempt: bool = False) -> Flow[dict[str, Any]]:
        """Cancel a job that has not ended (``DELETE /api/v1/jobs/{id}``): nothing is sent after this returns.

        Answers ``{"job_id", "status": "cancelled", "children_cancelled",
        "children_cancel_requested"}``; what is pending below the job in its
        workflow is cancelled too. With an attempt in flight it raises
        ``EZThrottleError`` (code ``in_flight``, HTTP 409) unless
        ``after_attempt=True``: then the status is ``"cancel_requested"`` and
        the job ends ``cancelled`` when that attempt ends, its result kept (a
        success it brings stands). A job that has ended raises code
        ``already_final`` (409); another customer's or an unknown job,
        ``NotFoundError``. Webhooks get status ``"cancelled"``.
        """
        return (yield from self._api(self._cancel_call(job_id, after_attempt)))

    def _cancel_jobs(self, job_ids: list[str], after_attempt: bool = False) -> Flow[dict[str, Any]]:
        """Cancel up to 1000 jobs (``POST /api/v1/jobs/cancel``): ``{"counts": {outcome: n}, "jobs": {job_id: outcome}}``,
        outcomes ``cancelled``, ``cancel_requested``, ``in_flight``, ``already_final``, ``not_found``."""
        return (yield from self._api(self._cancel_many_call(job_ids, after_attempt)))

    def _cancel_matching(
        self,
        *,
        status: Union[str, Iterable[str], None] = None,
        domain: Optional[str] = None,
        created_after: Optional[int] = None,
        created_before: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        root_job_id: Optional[str] = None,
        after_attempt: bool = False,
    ) -> Flow[dict[str, Any]]:
        """Cancel every job the filters match (``list_jobs``'s; jobs not yet final unless ``status`` says), as a bulk action.

        Answers the action at once: ``action_id``, ``state`` (``running``, or
        ``done`` when at most 100 matched: then ``jobs`` and ``counts`` give
        each one's outcome), ``matched`` (exact when ``matched_exact``),
        ``cancelled``, ``cancel_requested``, ``in_flight``, ``skipped_final``,
        ``not_found``. A larger set runs in the background on the server: read
        it with ``get_cancel_progress`` or wait for it with ``wait_cancel``.
        Only jobs created before the call are cancelled.
        """
        query = self._list_query(status, domain, created_after, created_before, metadata, root_job_id, 50)
        return (yield from self._api(self._cancel_matching_call(query, after_attempt)))

    def _get_cancel_progress(self, action_id: str) -> Flow[dict[str, Any]]:
        """A bulk cancel's progress (``GET /api/v1/jobs/cancel/{action_id}``); ``NotFoundError`` for an unknown one."""
        return (yield from self._api(self._cancel_progress_call(action_id)))

    def _wait_cancel(
        self, action_id: str, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S, *, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    ) -> Flow[dict[str, Any]]:
        """Wait until a bulk cancel has ended (``state`` ``done`` or ``failed``); its last progress.

        Polls, backing off up to ``poll_interval_s``; ``TimeoutError`` after ``timeout_s``.
        """
        call = self._cancel_progress_call(action_id)
        timeout_s, poll_interval_s = self._wait_args(timeout_s, poll_interval_s)
        deadline = time.monotonic() + timeout_s
        for delay_s in _waiting.backoff_s(_waiting.POLL_FIRST_S, poll_interval_s):
            progress = yield from self._api(call)
            if progress.get("state") != "running":
                return progress
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"bulk cancel {action_id} still running after {timeout_s} s: {progress}")
            yield _Sleep(min(delay_s, remaining))
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_domain(self, host: str) -> Flow[dict[str, Any]]:
        """A target domain as this customer sees it (``GET /api/v1/domains/{host}``).

        ``host`` or ``host:port`` (a bare host is port 443). Answers the limit
        its jobs there are paced by and where it comes from (``limit``:
        ``rps``, ``rps_source``, ``max_concurrent``...), ``paused`` and
        ``paused_until_ms``, and this customer's jobs there not yet final
        (``jobs``: ``queued``, ``in_flight``), its circuit breaker
        (``circuit``: ``state``, ``open_until_ms``), and ``flow_control_keys``:
        the state of each of your flow-control keys whose jobs went there.
        """
        return (yield from self._api(self._domain_call(host)))

    def _get_flow_control(self, key: str) -> Flow[dict[str, Any]]:
        """One of this customer's flow-control keys (``GET /api/v1/flow-control/{key}``): ``rate``,
        ``parallelism``, ``in_flight``, ``paused``, ``paused_until_ms``; ``NotFoundError`` for a key never used."""
        return (yield from self._api(self._flow_call(key)))

    def _pause_flow_control(self, key: str) -> Flow[dict[str, Any]]:
        """Hold back every job of the key until :meth:`resume_flow_control` (they wait; nothing is lost)."""
        return (yield from self._api(self._flow_call(key, "pause")))

    def _resume_flow_control(self, key: str) -> Flow[dict[str, Any]]:
        """End the key's pause (yours, or a target's Retry-After); its jobs go again at its pace."""
        return (yield from self._api(self._flow_call(key, "resume")))

    def _create_schedule(
        self,
        job: Any,
        *,
        cron: Optional[str] = None,
        every_s: Optional[int] = None,
        timezone: str = "UTC",
        overlap: str = "skip",
    ) -> Flow[dict[str, Any]]:
        """Fire ``job`` (a payload or a ``Step``) on a cron expression (in ``timezone``) or every ``every_s``
        seconds (``POST /api/v1/schedules``). Each tick is one ordinary job, once, with the idempotent key
        ``sched:<schedule_id>:<tick ms>``; ``overlap="skip"`` skips a tick while the last fired job is not final.
        Answers the schedule: ``schedule_id``, ``next_fire_at_ms``, ``paused``, ``last_job_id``, ``last_error``..."""
        if cron is None and every_s is None:
            raise ValidationError("a schedule needs cron or every_s")
        body = self._schedule_body(job, cron, every_s, timezone, overlap)
        return (yield from self._api(self._schedule_call("POST", body=body)))

    def _list_schedules(self) -> Flow[list[dict[str, Any]]]:
        """This customer's schedules, oldest first."""
        answer = yield from self._api(self._schedule_call("GET"))
        return list(answer["schedules"])

    def _get_schedule(self, schedule_id: str) -> Flow[dict[str, Any]]:
        """One schedule; ``NotFoundError`` for an unknown one (or another customer's)."""
        return (yield from self._api(self._schedule_call("GET", schedule_id)))

    def _update_schedule(
        self,
        schedule_id: str,
        *,
        job: Any = None,
        cron: Optional[str] = None,
        every_s: Optional[int] = None,
        timezone: Optional[str] = None,
        overlap: Optional[str] = None,
        paused: Optional[bool] = None,
    ) -> Flow[dict[str, Any]]:
        """Change a schedule (``PATCH``): what is given changes; a new timing or a resume counts the next tick from now."""
        body = self._schedule_body(job, cron, every_s, timezone, overlap, paused)
        return (yield from self._api(self._schedule_call("PATCH", schedule_id, body)))

    def _pause_schedule(self, schedule_id: str) -> Flow[dict[str, Any]]:
        """No tick fires until :meth:`resume_schedule`."""
        return (yield from self._api(self._schedule_call("PATCH", schedule_id, {"paused": True})))

    def _resume_schedule(self, schedule_id: str) -> Flow[dict[str, Any]]:
        """Fire again from the next tick after now (the ticks missed while paused do not fire)."""
        return (yield from self._api(self._schedule_call("PATCH", schedule_id, {"paused": False})))

    def _delete_schedule(self, schedule_id: str) -> Flow[dict[str, Any]]:
        """Delete a schedule (the jobs it fired stay): ``{"schedule_id", "deleted": True}``."""
        return (yield from self._api(self._schedule_call("DELETE", schedule_id)))

    def _list_jobs_page(self, query: list[tuple[str, str]], cursor: Optional[str]) -> Flow[dict[str, Any]]:
        """One page of ``GET /api/v1/jobs``: ``{"jobs": [...], "next_cursor": str | None}``."""
        return (yield from self._api(self._list_jobs_call(query, cursor)))

    def _request(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        *,
        timeout_s: Optional[float] = None,
    ) -> Flow[httpx.Response]:
        """Send a request straight to ``url`` (not through EZThrottle), without the API key."""
        options = {
            "headers": headers,
            "content": body,
            "timeout": timeout_s or self.timeout_s,
            "follow_redirects": True,
        }
        try:
            response: httpx.Response = yield _Send(method.upper(), url, options)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, url) from exc
        return response

    def _queue_request(
        self,
        url: str,
        webhook_url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        retry_at: Optional[int] = None,
    ) -> Flow[dict[str, Any]]:
        """Deprecated: use ``submit_job(webhooks=[{"url": webhook_url}])`` or ``Step``."""
        _flow.warn_caller(
            "queue_request() is deprecated; use submit_job(webhooks=[...]) or the Step builder",
            DeprecationWarning,
        )
        webhooks = _legacy_webhooks(webhook_url)
        job = yield from self._submit_job(url, method, headers, body, metadata, webhooks, retry_at=retry_at)
        return job

    def _queue_and_wait(
        self,
        url: str,
        webhook_url: Optional[str],
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        timeout: int = 300,
        poll_interval: int = 2,
        metadata: Optional[dict[str, Any]] = None,
        retry_at: Optional[int] = None,
    ) -> Flow[dict[str, Any]]:
        """Submit a job and wait for its final state; return the job view.

        ``timeout`` (seconds) bounds the wait (``TimeoutError``); the job's
        event stream is followed, and ``poll_interval`` only caps the backoff
        on edges that have no event stream. ``webhook_url`` still receives the
        result (None for no webhook).
        """
        webhooks = _legacy_webhooks(webhook_url)
        job = yield from self._submit_job(url, method, headers, body, metadata, webhooks, retry_at=retry_at)
        return (yield from self._wait(_job_id(job), timeout, poll_interval_s=poll_interval))

    def _forward_or_fallback(
        self,
        fallback: Callable[[], Union[T, Awaitable[T]]],
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        **job: Any,
    ) -> Flow[Union[dict[str, Any], T]]:
        """Submit a job, or return ``fallback()`` if no edge can be reached.

        Only a failure to connect to every edge calls ``fallback``; any other
        error (a refusal, a quota, a slow answer that may have queued the job)
        is raised, so the request never runs both ways. The async client
        awaits what ``fallback()`` returns if it is awaitable.
        """
        try:
            return (yield from self._submit_job(url, method, headers, body, **job))
        except ConnectionError:
            resolved: T = yield _Resolve(fallback())
            return resolved

    def _create_webhook_secret(self, primary_secret: str, secondary_secret: Optional[str] = None) -> Flow[dict[str, Any]]:
        """Set the secret(s) webhooks are signed with (16+ characters each)."""
        return (yield from self._api(self._create_secret_call(primary_secret, secondary_secret)))

    def _get_webhook_secret(self) -> Flow[dict[str, Any]]:
        """The secrets, masked; ``NotFoundError`` if none are set."""
        return (yield from self._api(self._secret_call("GET")))

    def _delete_webhook_secret(self) -> Flow[dict[str, Any]]:
        """Remove the secrets: webhooks go out unsigned."""
        return (yield from self._api(self._secret_call("DELETE")))

    def _rotate_webhook_secret(self, new_secret: str, *, current_secret: Optional[str] = None) -> Flow[dict[str, Any]]:
        """Make ``new_secret`` primary and keep the current one valid as secondary.

        The server swaps them in one step (it never reveals the current secret,
        so a client could not). ``current_secret``: set this pair explicitly
        instead, whatever is stored now.
        """
        _check_secret(new_secret, "new_secret")
        if current_secret is not None:
            return (yield from self._create_webhook_secret(new_secret, current_secret))
        return (yield from self._api(_ApiCall("POST", _SECRETS + "/rotate", json={"new_secret": new_secret})))


LIST_JOBS_DOC = """Every job of this API key's customer that matches the filters, newest first.

    A generator (``async for`` on ``AsyncEZThrottle``): it asks for one page of
    ``limit`` jobs at a time (``GET /api/v1/jobs``) and follows ``next_cursor``
    until the list ends. Filters combine (all must match):

    - ``status``: ``"failed"`` or a list (``["queued", "running"]``);
    - ``domain``: ``"api.stripe.com"`` or ``"host:port"`` (a bare host is port 443);
    - ``created_after`` / ``created_before``: ms since the epoch, exclusive;
    - ``metadata``: ``{"order_id": "A-1", "attempt": 3}``, each an exact match
      of a top-level metadata value;
    - ``root_job_id``: a workflow, its root job and every job below it.

    Each job is a summary (``job_id``, ``status``, ``created_at_ms``, ``url``,
    ``domain``, ``metadata``, ``workflow``...); ``get_job(job_id)`` has the rest.
    Bad filters raise ``ValidationError`` before any request.
    """


def _blocking(flow: Callable[Concatenate[Any, P], Flow[T]]) -> Callable[Concatenate[Any, P], T]:
    """The sync client's method that runs ``flow`` (a ``BaseClient._<name>``)."""

    def method(self: EZThrottle, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(flow(self, *args, **kwargs))

    _method_like(method, flow, "EZThrottle")
    return method


def _awaitable(
    flow: Callable[Concatenate[Any, P], Flow[T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """The async client's coroutine method that runs ``flow`` (a ``BaseClient._<name>``)."""

    async def method(self: AsyncEZThrottle, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(flow(self, *args, **kwargs))

    _method_like(method, flow, "AsyncEZThrottle")
    return method


def _method_like(method: Any, flow: Callable[..., Any], owner: str) -> None:
    """Name, document and sign ``method`` as the public method ``flow`` implements."""
    method.__name__ = flow.__name__.lstrip("_")
    method.__qualname__ = f"{owner}.{method.__name__}"
    method.__doc__ = flow.__doc__
    # The flow's parameters, without its return type (the method returns the flow's value).
    signature = inspect.signature(flow)
    method.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)


class EZThrottle(BaseClient):
    """Sync client. Use as a context manager, or call ``close()``."""

    _http: httpx.Client

    def _open_pool(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout_s, headers={"User-Agent": USER_AGENT}, limits=self._pool_limits())

    def __enter__(self) -> EZThrottle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the API: BaseClient's flows, run blocking ----------------------------------

    submit_job = _blocking(BaseClient._submit_job)
    submit_many = _blocking(BaseClient._submit_many)
    get_job = _blocking(BaseClient._get_job)
    cancel_job = _blocking(BaseClient._cancel_job)
    cancel_jobs = _blocking(BaseClient._cancel_jobs)
    cancel_matching = _blocking(BaseClient._cancel_matching)
    get_cancel_progress = _blocking(BaseClient._get_cancel_progress)
    wait_cancel = _blocking(BaseClient._wait_cancel)
    get_domain = _blocking(BaseClient._get_domain)
    get_flow_control = _blocking(BaseClient._get_flow_control)
    pause_flow_control = _blocking(BaseClient._pause_flow_control)
    resume_flow_control = _blocking(BaseClient._resume_flow_control)
    create_schedule = _blocking(BaseClient._create_schedule)
    list_schedules = _blocking(BaseClient._list_schedules)
    get_schedule = _blocking(BaseClient._get_schedule)
    update_schedule = _blocking(BaseClient._update_schedule)
    pause_schedule = _blocking(BaseClient._pause_schedule)
    resume_schedule = _blocking(BaseClient._resume_schedule)
    delete_schedule = _blocking(BaseClient._delete_schedule)
    wait = _blocking(BaseClient._wait)
    claim_frugal_step = _blocking(BaseClient._claim_frugal_step)
    request = _blocking(BaseClient._request)
    queue_request = _blocking(BaseClient._queue_request)
    queue_and_wait = _blocking(BaseClient._queue_and_wait)
    # mypy reads the flow's `self` as named when **job follows it (python/mypy#19051).
    forward_or_fallback = _blocking(BaseClient._forward_or_fallback)  # type: ignore[arg-type]
    create_webhook_secret = _blocking(BaseClient._create_webhook_secret)
    get_webhook_secret = _blocking(BaseClient._get_webhook_secret)
    delete_webhook_secret = _blocking(BaseClient._delete_webhook_secret)
    rotate_webhook_secret = _blocking(BaseClient._rotate_webhook_secret)

    def list_jobs(
        self,
        *,
        status: Union[str, Iterable[str], None] = None,
        domain: Optional[str] = None,
        created_after: Optional[int] = None,
        created_before: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        root_job_id: Optional[str] = None,
        limit: int = 50,
    ) -> Iterator[dict[str, Any]]:
        query = self._list_query(status, domain, created_after, created_before, metadata, root_job_id, limit)

        def pages() -> Iterator[dict[str, Any]]:
            cursor: Optional[str] = None
            while True:
                page = self._run(self._list_jobs_page(query, cursor))
                yield from page.get("jobs") or []
                cursor = page.get("next_cursor")
                if not cursor:
                    return

        return pages()

    list_jobs.__doc__ = LIST_JOBS_DOC

    # -- I/O -------------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        return _flow.run(flow, self._perform)

    def _send(self, effect: _Send) -> httpx.Response:
        if effect.stream:
            request = self._http.build_request(effect.method, effect.url, **effect.options)
            return self._http.send(request, stream=True)
        return self._http.request(effect.method, effect.url, **effect.options)

    def _sleep(self, effect: _Sleep) -> None:
        time.sleep(effect.seconds)

    def _read_body(self, effect: _ReadBody) -> None:
        effect.response.read()

    def _read_chunks(self, effect: _ReadChunks) -> None:
        for chunk in effect.response.iter_bytes():
            if effect.feed(chunk):
                return

    def _close(self, effect: _Close) -> None:
        effect.response.close()

    def _gather(self, effect: _Gather) -> list[Any]:
        return [self._run(flow) for flow in effect.flows]

    def _exclusive(self, effect: _Exclusive) -> Any:
        return self._run(effect.flow)

    def _resolve(self, effect: _Resolve) -> Any:
        return effect.value

    def _coalesce(self, effect: _Coalesce) -> dict[str, Any]:
        return self._run(self._api(self._submit_call(effect.payload)))  # one call at a time: nothing to coalesce


class AsyncEZThrottle(BaseClient):
    """Async client with the same API; use ``async with`` or ``await aclose()``."""

    _http: httpx.AsyncClient

    _edges_lock: Optional[asyncio.Lock] = None
    _slots: Optional[asyncio.Semaphore] = None
    _pending: Optional[list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]] = None  # this turn's submit_jobs
    _settling: Optional[set[asyncio.Future[None]]] = None  # batches in flight, held until done (tasks are weakly held)

    def _open_pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout_s, headers={"User-Agent": USER_AGENT}, limits=self._pool_limits())

    async def __aenter__(self) -> AsyncEZThrottle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    close = aclose

    # -- the API: BaseClient's flows, as coroutines -----------------------------------

    submit_job = _awaitable(BaseClient._submit_job)
    submit_many = _awaitable(BaseClient._submit_many)
    get_job = _awaitable(BaseClient._get_job)
    cancel_job = _awaitable(BaseClient._cancel_job)
    cancel_jobs = _awaitable(BaseClient._cancel_jobs)
    cancel_matching = _awaitable(BaseClient._cancel_matching)
    get_cancel_progress = _awaitable(BaseClient._get_cancel_progress)
    wait_cancel = _awaitable(BaseClient._wait_cancel)
    get_domain = _awaitable(BaseClient._get_domain)
    get_flow_control = _awaitable(BaseClient._get_flow_control)
    pause_flow_control = _awaitable(BaseClient._pause_flow_control)
    resume_flow_control = _awaitable(BaseClient._resume_flow_control)
    create_schedule = _awaitable(BaseClient._create_schedule)
    list_schedules = _awaitable(BaseClient._list_schedules)
    get_schedule = _awaitable(BaseClient._get_schedule)
    update_schedule = _awaitable(BaseClient._update_schedule)
    pause_schedule = _awaitable(BaseClient._pause_schedule)
    resume_schedule = _awaitable(BaseClient._resume_schedule)
    delete_schedule = _awaitable(BaseClient._delete_schedule)
    wait = _awaitable(BaseClient._wait)
    claim_frugal_step = _awaitable(BaseClient._claim_frugal_step)
    request = _awaitable(BaseClient._request)
    queue_request = _awaitable(BaseClient._queue_request)
    queue_and_wait = _awaitable(BaseClient._queue_and_wait)
    # mypy reads the flow's `self` as named when **job follows it (python/mypy#19051).
    forward_or_fallback = _awaitable(BaseClient._forward_or_fallback)  # type: ignore[arg-type]
    create_webhook_secret = _awaitable(BaseClient._create_webhook_secret)
    get_webhook_secret = _awaitable(BaseClient._get_webhook_secret)
    delete_webhook_secret = _awaitable(BaseClient._delete_webhook_secret)
    rotate_webhook_secret = _awaitable(BaseClient._rotate_webhook_secret)

    def list_jobs(
        self,
        *,
        status: Union[str, Iterable[str], None] = None,
        domain: Optional[str] = None,
        created_after: Optional[int] = None,
        created_before: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        root_job_id: Optional[str] = None,
        limit: int = 50,
    ) -> AsyncIterator[dict[str, Any]]:
        query = self._list_query(status, domain, created_after, created_before, metadata, root_job_id, limit)

        async def pages() -> AsyncIterator[dict[str, Any]]:
            cursor: Optional[str] = None
            while True:
                page = await self._run(self._list_jobs_page(query, cursor))
                for job in page.get("jobs") or []:
                    yield job
                cursor = page.get("next_cursor")
                if not cursor:
                    return

        return pages()

    list_jobs.__doc__ = LIST_JOBS_DOC

    # -- I/O, never blocking the loop ---------------------------------------------------

    async def _run(self, flow: Flow[T]) -> T:
        return await _flow.run_async(flow, self._perform)

    async def _send(self, effect: _Send) -> httpx.Response:
        if effect.stream:
            request = self._http.build_request(effect.method, effect.url, **effect.options)
            return await self._http.send(request, stream=True)
        if not effect.api:
            return await self._http.request(effect.method, effect.url, **effect.options)
        # httpx's pool gets slow (quadratic) with thousands of waiting requests:
        # queue them here, so it never holds more than it has connections.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)  # in the running loop
        async with self._slots:
            return await self._http.request(effect.method, effect.url, **effect.options)

    async def _sleep(self, effect: _Sleep) -> None:
        await asyncio.sleep(effect.seconds)

    async def _read_body(self, effect: _ReadBody) -> None:
        await effect.response.aread()

    async def _read_chunks(self, effect: _ReadChunks) -> None:
        async for chunk in effect.response.aiter_bytes():
            if effect.feed(chunk):
                return

    async def _close(self, effect: _Close) -> None:
        await effect.response.aclose()

    async def _gather(self, effect: _Gather) -> list[Any]:
        return list(await asyncio.gather(*(self._run(flow) for flow in effect.flows)))

    async def _exclusive(self, effect: _Exclusive) -> Any:
        if self._edges_lock is None:
            self._edges_lock = asyncio.Lock()  # created in the running loop
        async with self._edges_lock:
            return await self._run(effect.flow)

    async def _resolve(self, effect: _Resolve) -> Any:
        value = effect.value
        return await value if inspect.isawaitable(value) else value

    async def _coalesce(self, effect: _Coalesce) -> dict[str, Any]:
        """Join this turn's submissions (the first schedules their flush for the end of the turn); await this one's answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if not self._pending:
            self._pending = []
            loop.call_soon(self._flush_submits)
        self._pending.append((effect.payload, future))
        if len(self._pending) >= MAX_BATCH_JOBS:
            self._flush_submits()
        return await future

    def _flush_submits(self) -> None:
        batch, self._pending = self._pending or [], []
        if batch:
            if self._settling is None:
                self._settling = set()
            task = asyncio.ensure_future(self._settle(batch))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle(self, batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]) -> None:
        answers: list[Union[dict[str, Any], BaseException]]
        try:
            answers = list(await self._run(self._submit_together([payload for payload, _ in batch])))
        except Exception as exc:  # not an answer the server gave: every caller of the batch hears it
            answers = [exc] * len(batch)
        for (_, future), answer in zip(batch, answers):
            if future.done():  # its caller was cancelled: the job may stand all the same, as a request in flight would
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


def _check_secret(secret: object, field: str) -> str:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise ValidationError(f"{field} must be at least {MIN_SECRET_CHARS} characters")
    return secret


def _batch_job(job: Union[Mapping[str, Any], Step], index: int) -> dict[str, Any]:
    """The payload of ``submit_many``'s job ``index``: a PERFORMANCE Step's, or built from ``submit_job``'s arguments."""
    try:
        if isinstance(job, Step):
            if job._step_type is StepType.FRUGAL:
                raise ValidationError("a FRUGAL step runs in this process first: execute() it (submit_many hands jobs to EZThrottle)")
            return job._build_job_payload()
        if not isinstance(job, Mapping):
            raise ValidationError(f"must be a dict of submit_job's arguments or a Step, got {type(job).__name__}")
        unknown = sorted(set(job) - _JOB_ARGS)
        if unknown:
            raise ValidationError(f"unknown field(s) {unknown}; known: {sorted(_JOB_ARGS)}")
        return build_job_payload(**{"url": None, **job})
    except ValidationError as error:
        raise ValidationError(f"jobs[{index}]: {error.message}") from None


def _job_id(job: Mapping[str, Any]) -> str:
    job_id = job.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise EZThrottleError(f"the server answered without a job_id: {dict(job)!r}")
    return job_id


def _legacy_webhooks(webhook_url: Optional[str]) -> Optional[list[dict[str, Any]]]:
    return [{"url": webhook_url, "has_quorum_vote": True}] if webhook_url else None

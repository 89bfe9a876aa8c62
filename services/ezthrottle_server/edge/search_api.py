"""What a customer may look up beyond one job: its jobs (list and search), and a target domain as it sees it.

- ``GET /api/v1/jobs?status=&domain=&created_after=&created_before=&metadata.<key>=&root_job_id=&limit=&cursor=``
  -> ``{"jobs": [...], "next_cursor": str | null}``: the key's customer's jobs,
  newest first (common/job_index.py). Filters combine (all must match);
  ``status`` takes a comma list; ``created_after``/``created_before`` are ms
  since the epoch, both exclusive; ``metadata.<key>=<value>`` matches a
  top-level metadata value exactly (strings as they are, numbers, booleans and
  null as JSON: ``metadata.attempt=3``); ``root_job_id`` lists a workflow (its
  root and every job below it). ``limit`` 1-200 (default 50). A page may be
  short, even empty, with a ``next_cursor``: one request reads a bounded
  number of jobs; follow ``next_cursor`` until it is null. A bad parameter is
  a 400 naming it.
- ``GET /api/v1/domains/{host}`` (``host`` or ``host:port``; a bare host is
  port 443) -> the limit this customer's jobs to the domain are paced by, and
  where it comes from, whether it is paused, and the customer's jobs there not
  yet final (counted from its job index), and its circuit breaker's state
  (pacing: open after repeated infrastructure failures, nothing is sent until a
  probe succeeds), and the states of the customer's flow-control keys its jobs
  used there (pacing/flow.py).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..common import job_index
from ..common.errors import ApiError
from ..common.http import json_response
from ..pacing import OverridesError
from ..pacing.scope import SHARED, parse_domain
from .context import CTX

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
STATUSES = ("queued", "scheduled", "running", "success", "failed", "cancelled", "expired")
METADATA_PREFIX = "metadata."
MAX_METADATA_FILTERS = 16
MAX_TEXT = 512  # characters of a metadata key or value, or a domain
_PARAMS = frozenset({"status", "domain", "created_after", "created_before", "root_job_id", "limit", "cursor"})
_JOB_ID = re.compile(r"^job_\d{10,16}_[0-9a-f]{16}p\d{1,4}$")


def _bad(name: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(code, f"{name}: {message}", field=name)


def _one(query: Any, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _bad(name, "given more than once")
    return values[0] if values else None


def _ms(query: Any, name: str) -> int | None:
    raw = _one(query, name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > job_index.MS_DIGITS:  # '²'.isdigit() too
        raise _bad(name, "must be a time in ms since the epoch (digits only)")
    return int(raw)


def _domain(raw: str, name: str) -> str:
    if not raw or len(raw) > MAX_TEXT or not raw.isprintable():
        raise _bad(name, "must be host or host:port")
    try:
        return parse_domain(raw)
    except (OverridesError, ValueError) as exc:
        raise _bad(name, f"must be host or host:port ({exc})") from exc


def parse_query(query: Any) -> tuple[job_index.JobFilter, int, str | None]:
    """The filter, limit and cursor position of a listing; 400 naming the first bad parameter."""
    for name in query:
        if name not in _PARAMS and not name.startswith(METADATA_PREFIX):
            raise _bad(name, f"unknown parameter (filters: {', '.join(sorted(_PARAMS))}, metadata.<key>)", "unknown_field")
    flt = job_index.JobFilter()
    statuses = [s for raw in query.getall("status", []) for s in raw.split(",")]
    for status in statuses:
        if status not in STATUSES:
            raise _bad("status", f"must be one of {', '.join(STATUSES)} (a comma list for several)")
    flt.statuses = frozenset(statuses)
    domain = _one(query, "domain")
    if domain is not None:
        flt.domain = _domain(domain, "domain")
    flt.created_after = _ms(query, "created_after")
    flt.created_before = _ms(query, "created_before")
    root = _one(query, "root_job_id")
    if root is not None:
        if not _JOB_ID.match(root):
            raise _bad("root_job_id", "is not a job id")
        flt.root_job_id = root
    for name in query:
        if name.startswith(METADATA_PREFIX):
            key = name[len(METADATA_PREFIX) :]
            value = _one(query, name)
            if not key or len(key) > MAX_TEXT or value is None or len(value) > MAX_TEXT:
                raise _bad(name, f"write metadata.<key>=<value>, each at most {MAX_TEXT} characters")
            flt.metadata[key] = value
    if len(flt.metadata) > MAX_METADATA_FILTERS:
        raise _bad("metadata", f"at most {MAX_METADATA_FILTERS} metadata filters")
    raw_limit = _one(query, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
    cursor = _one(query, "cursor")
    position = None
    if cursor is not None:
        position = job_index.decode_cursor(cursor)
        if position is None:
            raise _bad("cursor", "is not a cursor this API gave (pass next_cursor as it came)")
    return flt, limit, position


async def list_jobs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    flt, limit, position = parse_query(request.query)
    page = await job_index.list_jobs(ctx.redis, ctx.settings.partitions, customer, flt, limit=limit, cursor=position)
    return json_response({"jobs": page.jobs, "next_cursor": page.next_cursor})


async def get_domain(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    domain = _domain(request.match_info["host"], "host")
    limiter = ctx.worker.limiter
    scope = (await limiter.scopes_for([(domain, customer)]))[(domain, customer)]
    view = await limiter.describe(domain, scope.who)
    counts = await job_index.count_for_domain(ctx.redis, ctx.settings.partitions, customer, domain)
    return json_response(
        {
            "domain": domain,
            "limit": {
                "scope": "shared" if scope.who == SHARED else "customer",
                "rps": view.rps,
                "rps_source": view.rps_source,
                "max_concurrent": view.max_concurrent,
                "max_concurrent_source": view.max_concurrent_source,
                "burst": view.burst,
            },
            "paused": view.paused_until_ms > 0,
            "paused_until_ms": view.paused_until_ms or None,
            "circuit": {"state": view.circuit, "open_until_ms": view.circuit_open_until_ms or None},
            "jobs": {"queued": counts.queued, "in_flight": counts.in_flight, "complete": counts.complete},
            "flow_control_keys": await ctx.flow.keys_at(customer, domain),
        }
    )


ROUTES = [
    web.get("/api/v1/jobs", list_jobs),
    web.get("/api/v1/domains/{host}", get_domain),
]

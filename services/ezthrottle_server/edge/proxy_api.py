"""``POST /api/v1/proxy``: the envelope the published SDK (``ezthrottle==1.3.0``) speaks.

That SDK never calls the API directly: it posts every request, wrapped, to a
proxy (``tracktags_url``)::

    POST /api/v1/proxy   Authorization: Bearer <key>
    {"scope": "customer", "metric_name": "",
     "target_url": "<ezthrottle_url>/api/v1/jobs", "method": "POST",
     "headers": {"Content-Type": "application/json"}, "body": "<json string>"}

and reads ``{"status": "allowed", "forwarded_response": {"status_code",
"headers", "body": "<string>"}}``. We serve that envelope so existing users
switch by changing one URL. The request is dispatched in-process to the very
handler of the direct route (no HTTP hop), chosen by the target's path; the
target's host is ignored. Only these targets are served:

- ``POST /api/v1/jobs``, ``GET /api/v1/jobs/{job_id}``
- ``POST`` / ``GET`` / ``DELETE /api/v1/webhook-secrets``

Answers:

- the handler's answer, whatever its status, inside ``forwarded_response``
  (HTTP 200), because that is where 1.3.0 looks for it (a 404 from
  ``GET /api/v1/webhook-secrets`` means "no secret yet");
- except 429 (quota, rate limits): the handler's own 429, unwrapped, with
  ``Retry-After`` in whole seconds and the JSON ``{"error": ...}`` body, which
  1.3.0 turns into ``EZThrottleError("Rate limited: ...", retry_at=...)``;
- a malformed envelope: 400 naming the field; an unknown target path: 404;
  a known path with another method: 405; a bad key: 401, as on every route.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

from aiohttp import web
from yarl import URL

from ..common.errors import ApiError
from ..common.http import error_response, json_response, pass_on, read_json, run_after
from .context import CTX

PATH = "/api/v1/proxy"

# Target paths served through the envelope, with the methods each allows.
_TARGETS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"/api/v1/jobs/?"), frozenset({"POST"})),
    (re.compile(r"/api/v1/jobs/[^/]+"), frozenset({"GET"})),
    (re.compile(r"/api/v1/webhook-secrets/?"), frozenset({"POST", "GET", "DELETE"})),
)
_ENVELOPE_FIELDS = frozenset({"scope", "metric_name", "target_url", "method", "headers", "body"})
# Envelope headers that never reach the handler: the outer request decides these.
_NOT_FORWARDED = frozenset({"authorization", "host", "content-length", "transfer-encoding", "connection"})
# Response headers that describe the inner response's framing, not its content.
_NOT_RETURNED = frozenset({"content-length", "transfer-encoding", "connection"})


def _field_error(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(code, f"{field}: {message}", field=field)


def _parse_envelope(envelope: Any) -> tuple[str, URL, dict[str, str], bytes]:
    """Check the envelope; return (method, target path and query, headers, body)."""
    if not isinstance(envelope, dict):
        raise ApiError("invalid_request", "the proxy envelope must be a JSON object with target_url, method, headers, body")
    unknown = sorted(set(envelope) - _ENVELOPE_FIELDS)
    if unknown:
        raise _field_error(unknown[0], f"unknown field; allowed: {', '.join(sorted(_ENVELOPE_FIELDS))}", "unknown_field")
    for name in ("scope", "metric_name"):  # the hosted proxy's metering options; nothing to do here
        if envelope.get(name) is not None and not isinstance(envelope[name], str):
            raise _field_error(name, "must be a string")

    target = envelope.get("target_url")
    if target is None:
        raise _field_error("target_url", "is required", "missing_field")
    if not isinstance(target, str):
        raise _field_error("target_url", "must be a string URL")
    try:
        url = URL(target)
        host = url.host  # decodes IDNA, which can fail (UnicodeError, a ValueError)
    except (ValueError, TypeError) as exc:
        raise _field_error("target_url", f"is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not host:
        raise _field_error("target_url", "must be an absolute http(s) URL such as https://<edge>/api/v1/jobs")

    method = envelope.get("method")
    if method is None:
        raise _field_error("method", "is required", "missing_field")
    if not isinstance(method, str) or not method.strip():
        raise _field_error("method", "must be an HTTP method such as POST")
    method = method.strip().upper()

    headers = envelope.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise _field_error("headers", "must be an object mapping header names to strings")

    body = envelope.get("body")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise _field_error("body", "must be a string (the JSON of the forwarded request, or empty)")
    return method, url.relative(), headers, body.encode()


def _check_target(method: str, target: URL) -> None:
    for pattern, methods in _TARGETS:
        if pattern.fullmatch(target.path):
            if method not in methods:
                raise ApiError(
                    "method_not_allowed",
                    f"method: {method} {target.path} is not served through the proxy; use {', '.join(sorted(methods))}",
                    field="method",
                )
            return
    raise ApiError(
        "not_found",
        f"target_url: {target.path} is not served through the proxy; "
        "targets: /api/v1/jobs, /api/v1/jobs/{job_id}, /api/v1/webhook-secrets",
        field="target_url",
    )


def _inner_headers(outer: web.Request, envelope_headers: dict[str, str], body: bytes) -> dict[str, str]:
    headers = {k: v for k, v in envelope_headers.items() if k.lower() not in _NOT_FORWARDED}
    if body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    if "Authorization" in outer.headers:
        headers["Authorization"] = outer.headers["Authorization"]
    return headers


async def _dispatch(inner: web.Request) -> web.StreamResponse:
    """Run the route's handler for ``inner`` as the app would, errors included."""
    match_info = await inner.app.router.resolve(inner)
    if match_info.http_exception is not None:  # no such route (e.g. secrets not deployed)
        raise ApiError("not_found", f"target_url: {inner.method} {inner.path} is not served by this edge", field="target_url")
    match_info.add_app(inner.app)
    match_info.freeze()
    inner._match_info = match_info  # as web.Application._handle does
    try:
        return await match_info.handler(inner)
    except ApiError as err:
        return error_response(err)


def _rate_limited(response: web.Response) -> web.Response:
    """The handler's 429, unwrapped, with ``Retry-After`` in whole seconds (1.3.0 reads an int)."""
    headers: dict[str, str] = {}
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        with contextlib.suppress(ValueError):  # an HTTP date; 1.3.0 could not read it, so leave it out
            headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
    return web.Response(body=response.body, status=429, content_type="application/json", headers=headers)


async def proxy(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    base = request.clone()  # a request can only be cloned before its body is read
    await ctx.auth.customer(request)  # refuse bad keys before looking at the envelope
    method, target, envelope_headers, body = _parse_envelope(await read_json(request, ctx.settings.max_body_bytes))
    _check_target(method, target)
    inner = base.clone(method=method, rel_url=target, headers=_inner_headers(request, envelope_headers, body))
    inner._read_bytes = body  # the handler reads the envelope's body, not the consumed stream
    response = await _dispatch(inner)
    try:
        return pass_on(response, _envelope(response, target))
    except BaseException:
        run_after(response)  # never written: what was to follow it (a taken job's send) runs now
        raise


def _envelope(response: web.StreamResponse, target: URL) -> web.Response:
    """What the published SDK reads in place of the handler's ``response``."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes | None):
        raise ApiError("internal_error", f"{target.path} did not answer with a plain body")
    if response.status == 429:
        return _rate_limited(response)
    return json_response(
        {
            "status": "allowed",
            "forwarded_response": {
                "status_code": response.status,
                "headers": {str(k): v for k, v in response.headers.items() if k.lower() not in _NOT_RETURNED},
                "body": (response.body or b"").decode("utf-8", "replace"),
            },
        }
    )


ROUTES = [web.post(PATH, proxy)]

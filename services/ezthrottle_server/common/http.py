"""HTTP helpers every service shares: JSON responses, the error middleware,
reading a JSON body within a size limit, and work that follows an answer.

Work after the answer
---------------------
A handler never writes its response early. When something should happen
only once the answer has left (the edge sends a job it has just leased, see
``edge/api.py``), the handler attaches it with :func:`then` and returns the
response as usual; whoever wraps the handler (the proxy's envelope) may
replace the response and carries the action over with :func:`pass_on`. The
:func:`after_response_middleware`, innermost, writes the final response and
runs the action, whatever became of the writing. Every action attached runs
exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import ResponseError

from .errors import ApiError
from .metrics import API_REQUESTS, labelled
from .redisconn import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body(), err.status, err.headers)


AfterResponse = Callable[[], None]
AFTER_RESPONSE = web.ResponseKey("after_response", object)  # holds an AfterResponse


def then(response: web.StreamResponse, action: AfterResponse) -> web.StreamResponse:
    """Run ``action`` (synchronous, must not raise) once ``response`` has been written."""
    response[AFTER_RESPONSE] = action
    return response


def pass_on(inner: web.StreamResponse, outer: web.StreamResponse) -> web.StreamResponse:
    """``outer`` answers in place of ``inner``: the action after ``inner`` follows ``outer``."""
    action = inner.pop(AFTER_RESPONSE, None)
    if action is not None:
        outer[AFTER_RESPONSE] = action
    return outer


def run_after(response: web.StreamResponse) -> None:
    """Run the action attached to a response that will not be written (the handler gave it up)."""
    action = response.pop(AFTER_RESPONSE, None)
    if action is not None:
        action()


@web.middleware
async def after_response_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Write a response that has an action attached, then run the action (see the module's docstring)."""
    resp = await handler(request)
    if AFTER_RESPONSE not in resp:
        return resp
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except (ConnectionError, RuntimeError) as exc:  # the client went away: the action runs all the same
        log.debug("answer not written on %s %s: %s", request.method, request.path, exc)
    finally:
        run_after(resp)
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        resp = await handler(request)
    except ApiError as err:
        resp = error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "internal_error")
        message = {
            404: f"no route for {request.method} {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "request body is larger than the limit",
        }.get(exc.status, exc.reason)
        resp = json_response({"error": {"code": code, "message": message}}, exc.status)
    except REDIS_UNAVAILABLE:  # down, or a cluster failing over
        log.warning("redis unavailable on %s %s", request.method, request.path, exc_info=True)
        resp = json_response(
            {"error": {"code": "unavailable", "message": "the job store is unreachable; nothing was accepted, retry shortly"}},
            503,
            {"Retry-After": "1"},
        )
    except ResponseError as exc:
        if "OOM command not allowed" not in str(exc):
            log.exception("unhandled error on %s %s", request.method, request.path)
            resp = json_response({"error": {"code": "internal_error", "message": "internal error; it has been logged"}}, 500)
        else:  # Redis at its maxmemory refuses writes: shed, as admission control would
            log.warning("redis is out of memory on %s %s: %s", request.method, request.path, exc)
            resp = json_response(
                {"error": {"code": "unavailable", "message": "the job store is out of memory; nothing was accepted, retry later"}},
                503,
                {"Retry-After": "5"},
            )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        resp = json_response({"error": {"code": "internal_error", "message": "internal error; it has been logged"}}, 500)
    labelled(API_REQUESTS, route, str(resp.status)).inc()
    return resp


async def read_json(request: web.Request, max_bytes: int) -> Any:
    ctype = request.headers.get("Content-Type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime and mime != "application/json" and not mime.endswith("+json"):
        raise ApiError("unsupported_media_type", f"Content-Type must be application/json, got {mime!r}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError("payload_too_large", f"request body is {request.content_length} bytes; the limit is {max_bytes}")
    try:
        raw = await request.read()  # client_max_size enforces the limit for chunked bodies
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not decode as
        detail = " ".join(str(getattr(exc, "message", "") or exc).split())
        raise ApiError("invalid_request", f"request body could not be read: {detail}") from exc
    if not raw:
        raise ApiError("invalid_json", "request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("invalid_json", f"request body is not valid JSON: {exc}") from exc

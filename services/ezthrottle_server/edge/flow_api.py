"""``/api/v1/flow-control/{key}``: a customer's own flow-control keys (pacing/flow.py).

- ``GET /api/v1/flow-control/{key}``: its rate and parallelism (as the last
  job asked), its sends in flight, whether it is paused and until when; 404
  for a key this customer never used (another customer's key of the same
  name is another key).
- ``POST /api/v1/flow-control/{key}/pause``: no job of the key is sent until
  resumed, or for ``{"for_s": n}`` seconds; its jobs wait, nothing is lost.
- ``POST /api/v1/flow-control/{key}/resume``: ends the pause (a customer's,
  or a target's Retry-After).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.jobs import MAX_FLOW_KEY_LENGTH
from ..pacing.flow import KEY_TTL_S
from .context import CTX

MAX_PAUSE_S = KEY_TTL_S  # a pause "until resumed" lasts at most as long as an unused key is kept


def _key(request: web.Request) -> str:
    key = request.match_info["key"]
    if not key or len(key) > MAX_FLOW_KEY_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ApiError("invalid_field", f"key: must be 1 to {MAX_FLOW_KEY_LENGTH} characters, no control characters", field="key")
    return key


async def _state(request: web.Request, customer: str, key: str) -> dict[str, Any]:
    state = await request.app[CTX].flow.state(customer, key)
    if state is None:
        raise ApiError("not_found", f"no flow-control key {key!r} for this API key (it is created by a job that names it)")
    return state


async def _own_key(request: web.Request) -> tuple[str, str]:
    """(customer, key) of a key this customer has used; 404 otherwise."""
    customer = await request.app[CTX].auth.customer(request)
    key = _key(request)
    await _state(request, customer, key)
    return customer, key


async def get_flow(request: web.Request) -> web.Response:
    customer, key = await _own_key(request)
    return json_response(await _state(request, customer, key))


async def pause_flow(request: web.Request) -> web.Response:
    customer, key = await _own_key(request)
    ctx = request.app[CTX]
    for_s: Any = MAX_PAUSE_S
    if request.can_read_body:
        body = await read_json(request, ctx.settings.max_body_bytes)
        if not isinstance(body, dict) or set(body) - {"for_s"}:
            raise ApiError("invalid_request", 'the body is optional: {"for_s": seconds}')
        for_s = body.get("for_s", MAX_PAUSE_S)
        if isinstance(for_s, bool) or not isinstance(for_s, int | float) or not 0 < for_s <= MAX_PAUSE_S:
            raise ApiError("invalid_field", f"for_s: must be a number of seconds above 0, at most {MAX_PAUSE_S}", field="for_s")
    await ctx.flow.pause(customer, key, int(time.time() * 1000 + for_s * 1000))
    return json_response(await _state(request, customer, key))


async def resume_flow(request: web.Request) -> web.Response:
    customer, key = await _own_key(request)
    await request.app[CTX].flow.resume(customer, key)
    return json_response(await _state(request, customer, key))


ROUTES = [
    web.get("/api/v1/flow-control/{key}", get_flow),
    web.post("/api/v1/flow-control/{key}/pause", pause_flow),
    web.post("/api/v1/flow-control/{key}/resume", resume_flow),
]

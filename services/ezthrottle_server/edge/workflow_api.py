"""Claims on FRUGAL steps: ``POST /api/v1/jobs/{job_id}/frugal-claims/{step_id}``.

The server never executes a FRUGAL child of a job. When the job finishes and
the child that its outcome selects is FRUGAL, the webhook payload carries it::

    "workflow": {"root_job_id": ..., "job_id": ...,
                 "frugal_steps": [{"step_id": "<job_id>:<relation>",
                                   "relation": "on_success" | "on_failure" | "fallback",
                                   "step": <child payload>}]}

and the SDK's webhook handler runs it. Webhooks are delivered at least once,
to several webhooks and from several regions, so several handlers may see
the same step. Before running it a handler claims it here; exactly one claim
succeeds:

- 201 ``{"status": "claimed", "job_id", "step_id"}``: run it;
- 409 ``conflict``: another handler (or an earlier delivery) has it;
- 404: no such job for this API key; 400: a step id that is not
  ``<job_id>:on_success|on_failure|fallback``.

The claim is a ``SET NX`` of ``keys.frugal_claim`` in the job's partition,
kept as long as a finished job (``job_ttl_s``), so a delivery retried days
later still finds it.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from ..common import keys
from ..common.errors import ApiError
from ..common.http import json_response
from .context import CTX

RELATIONS = ("on_success", "on_failure", "fallback")


async def claim_frugal_step(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    job_id = request.match_info["job_id"]
    step_id = request.match_info["step_id"]
    not_found = ApiError("not_found", f"no job {job_id!r} for this API key")
    if keys.job_partition(job_id) is None:
        raise not_found
    owner, relation = step_id.rpartition(":")[::2]
    if owner != job_id or relation not in RELATIONS:
        raise ApiError(
            "invalid_field",
            f"step_id: must be '{job_id}:<relation>' with relation one of {', '.join(RELATIONS)}, got {step_id!r}",
            field="step_id",
        )
    if await ctx.redis.hget(keys.job(job_id), "customer") != customer:  # type: ignore[misc]  # redis-py#2399
        raise not_found
    claim = orjson.dumps({"claimed_ms": int(time.time() * 1000)})
    won = await ctx.redis.set(keys.frugal_claim(job_id, step_id), claim, nx=True, ex=ctx.settings.job_ttl_s)
    if not won:
        raise ApiError("conflict", f"FRUGAL step {step_id!r} is already claimed; it runs once")
    return json_response({"status": "claimed", "job_id": job_id, "step_id": step_id}, 201)


ROUTES = [web.post("/api/v1/jobs/{job_id}/frugal-claims/{step_id}", claim_frugal_step)]

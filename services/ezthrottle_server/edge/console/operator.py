"""The console's operator pages (signed in with ``EZT_OPERATOR_TOKEN``): regions, admission, the
coordinator's leadership, every customer, every domain's pacing (edge/console/pages.py's domains page)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ...common import apikeys, keys
from ...common.errors import ApiError
from ...pacing.overrides import configured
from ..context import CTX, EdgeContext
from .pages import customers_of, render, signed_in
from .session import Viewer

MAX_DOMAINS = 200


async def operator(request: web.Request) -> Viewer:
    who = await signed_in(request)
    if not who.operator:
        raise ApiError("not_found", "an operator's page")
    return who


async def all_domains(ctx: EdgeContext) -> list[str]:
    """Domains with pacing state in Redis (any key under a domain's hash tag), and those domains.yaml
    configures: at most MAX_DOMAINS, read with SCAN."""
    found = set(await configured(ctx.redis))
    head = keys.domain_tag("\x00").split("\x00")[0]  # "{ezt:d:"
    async for key in ctx.redis.scan_iter(match=f"*{head}*", count=1000):
        start = key.find(head) + len(head)
        end = key.find("}", start)
        if end > start:
            found.add(key[start:end])
        if len(found) >= MAX_DOMAINS:
            break
    return sorted(found)


async def leadership(ctx: EdgeContext) -> dict[str, Any]:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.coordinator_leader())
        pipe.pttl(keys.coordinator_leader())
        holder, ttl_ms = await pipe.execute()
    return {"holder": holder, "ttl_ms": ttl_ms if holder else None}


async def regions(request: web.Request) -> web.StreamResponse:
    who = await operator(request)
    ctx = request.app[CTX]
    views = await ctx.regions.views()
    now_ms = int(time.time() * 1000)
    rows = [{"id": r.id, "edges": [], **views.get(r.id, {})} for r in ctx.settings.regions]
    return render(
        request,
        "regions.html",
        who,
        regions=rows,
        now_ms=now_ms,
        admission=ctx.admission.state(),
        leader=await leadership(ctx),
        this_region=ctx.settings.region,
    )


async def customers(request: web.Request) -> web.StreamResponse:
    who = await operator(request)
    ctx = request.app[CTX]
    rows = []
    for customer in await customers_of(ctx):
        rows.append({"customer": customer, "keys": len(await apikeys.list_keys(ctx.redis, customer))})
    return render(request, "customers.html", who, rows=rows)

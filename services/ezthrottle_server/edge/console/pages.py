"""The console's customer pages: jobs, a job, domains, dead letters, usage, webhook secrets.

Each page reads through the same functions as the JSON API (``search_api``,
``api.load_job_view``, ``common.deliveries``, ``quota``), scoped to the
signed-in customer: another customer's job is a 404 here too. The operator
(``viewer.operator``) reads the same pages across customers (edge/console/operator.py
adds its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp_jinja2
import orjson
from aiohttp import web
from multidict import MultiDict

from ...common import deliveries, hashes, job_index, keys
from ...common.errors import ApiError
from ...common.schedules import view as schedule_view
from ...common.secretbox import SecretBox, SecretBoxError, open_webhook_secrets, seal_webhook_secrets
from ...common.urls import domain_of
from ...pacing.scope import SHARED
from ..api import load_job_view
from ..context import CTX, EdgeContext
from ..events import FINAL, stream_job_events
from ..search_api import parse_query
from ..secrets_api import MAX_SECRET_CHARS, MIN_SECRET_CHARS, mask
from . import session
from .session import Viewer

try:  # cancelling (issue 17) may not be on this edge yet: then job pages have no cancel button
    from ...common.cancels import CancelOutcome, end_job  # type: ignore[import-not-found,unused-ignore]

    CAN_CANCEL = True
except ImportError:  # pragma: no cover
    CAN_CANCEL = False

PAGE_SIZE = 25
DOMAINS_FROM_JOBS = 200  # the latest jobs a customer's domains are gathered from
MAX_DOMAINS = 30
MAX_STATUS_IDS = 100
SENSITIVE_WORDS = ("authorization", "cookie", "key", "token", "secret", "password", "signature")
MASKED = "••••••"
LIST_FILTERS = ("status", "domain", "root_job_id", "cursor")


def masked_headers(headers: Any) -> list[tuple[str, str]]:
    """Headers to show: Authorization, Cookie and anything named like a key, token or secret are masked."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    out = []
    for name, value in items:
        hidden = any(word in str(name).lower() for word in SENSITIVE_WORDS)
        out.append((str(name), MASKED if hidden else str(value)))
    return out


def render(request: web.Request, template: str, who: Viewer | None, status: int = 200, **context: Any) -> web.Response:
    page = {"viewer": who, "path": request.path, "cancel_enabled": CAN_CANCEL, **context}
    return aiohttp_jinja2.render_template(template, request, page, status=status)


async def signed_in(request: web.Request) -> Viewer:
    who = await session.viewer(request)
    if who is None:
        to_sign_in = web.HTTPSeeOther(f"{session.PATH}/signin")
        if session.COOKIE in request.cookies:  # it no longer signs anyone in (a revoked key): drop it
            session.sign_out(request, to_sign_in)
        raise to_sign_in
    return who


async def checked_form(request: web.Request, who: Viewer) -> MultiDict[str]:
    form = await request.post()
    who.check_csrf(form.get(session.CSRF_FIELD))
    return MultiDict((k, v) for k, v in form.items() if isinstance(v, str))


def _ctx(request: web.Request) -> EdgeContext:
    return request.app[CTX]


# -- sign-in ---------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    raise web.HTTPSeeOther(f"{session.PATH}/regions" if who.operator else f"{session.PATH}/jobs")


SIGN_IN_ERRORS = {
    "invalid": "That API key or operator token is not valid.",
    "limited": "Too many failed sign-ins from this address: wait a minute and try again.",
}


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    token = session.sign_in_token(request)
    operator_enabled = bool(_ctx(request).settings.operator_token)
    error = SIGN_IN_ERRORS.get(request.query.get("error", ""))
    resp = render(request, "signin.html", None, error=error, operator_enabled=operator_enabled, signin_token=token)
    session.keep_sign_in_token(request, resp, token)
    return resp


async def sign_in(request: web.Request) -> web.StreamResponse:
    """The form's POST: to the viewer's first page, or back to the form saying why (post/redirect/get)."""
    form = await request.post()
    session.check_sign_in_token(request, form.get(session.CSRF_FIELD))
    secret = form.get("secret")
    try:
        who = await session.identify(request, secret if isinstance(secret, str) else "")
    except ApiError as exc:
        if exc.code not in ("unauthorized", "rate_limited"):
            raise
        failed = "limited" if exc.code == "rate_limited" else "invalid"
        raise web.HTTPSeeOther(f"{session.PATH}/signin?error={failed}") from None
    resp = web.HTTPSeeOther(f"{session.PATH}/regions" if who.operator else f"{session.PATH}/jobs")
    session.sign_in(request, resp, who)
    resp.del_cookie(session.PRE_COOKIE, path=session.PATH)
    raise resp


async def sign_out(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    await checked_form(request, who)
    resp = web.HTTPSeeOther(f"{session.PATH}/signin")
    session.sign_out(request, resp)
    raise resp


# -- jobs ------------------------------------------------------------------------------


async def customers_of(ctx: EdgeContext, limit: int = 500) -> list[str]:
    """Customers with API keys (the operator's pickers), read with SCAN."""
    prefix, suffix = keys.customer_keys("\x00").split("\x00")
    found: set[str] = set()
    async for key in ctx.redis.scan_iter(match=f"{prefix}*{suffix}", count=500):
        found.add(key[len(prefix) : -len(suffix)])
        if len(found) >= limit:
            break
    return sorted(found)


async def jobs(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    ctx = _ctx(request)
    customer = who.customer
    customers: list[str] = []
    if who.operator:
        customers = await customers_of(ctx)
        customer = request.query.get("customer") or (customers[0] if customers else None)
    query = MultiDict((k, v) for k, v in request.query.items() if k in LIST_FILTERS and v)
    error = None
    page = job_index.Page([], None)
    try:
        flt, _limit, position = parse_query(query)
        if customer is not None:
            page = await job_index.list_jobs(ctx.redis, ctx.settings.partitions, customer, flt, limit=PAGE_SIZE, cursor=position)
    except ApiError as exc:
        error = exc.message
    keep = {k: v for k, v in query.items() if k != "cursor"}
    if who.operator and customer:
        keep["customer"] = customer
    return render(
        request,
        "jobs.html",
        who,
        jobs=page.jobs,
        next_cursor=page.next_cursor,
        filters=keep,
        statuses=("queued", "scheduled", "running", "success", "failed", "cancelled", "expired"),
        error=error,
        customers=customers,
        customer=customer,
        final=FINAL,
    )


async def statuses(request: web.Request) -> web.Response:
    """``{job_id: status}`` of the given jobs that are the viewer's (the job list's live updates)."""
    who = await session.viewer(request)
    if who is None:
        raise ApiError("unauthorized", "sign in to the console first")
    ids = [i for i in request.query.get("ids", "").split(",") if keys.job_partition(i) is not None][:MAX_STATUS_IDS]
    out: dict[str, str] = {}
    if ids:
        async with _ctx(request).redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(keys.job(job_id), ["customer", "state"])
            rows = await pipe.execute()
        for job_id, (owner, state) in zip(ids, rows):
            if owner is not None and (who.operator or owner == who.customer):
                out[job_id] = state
    return web.json_response(out, dumps=lambda o: orjson.dumps(o).decode())


LIVE_MAX_S = 600.0  # a list's stream ends after this; the browser opens another
LIVE_RECHECK_S = 5.0  # and reads its jobs' states this often besides (a keep-alive too)


async def _owned_states(ctx: EdgeContext, who: Viewer, ids: list[str]) -> dict[str, str]:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["customer", "state"])
        rows = await pipe.execute()
    return {j: state for j, (owner, state) in zip(ids, rows) if owner is not None and (who.operator or owner == who.customer)}


async def live_statuses(request: web.Request) -> web.StreamResponse:
    """The job list's live statuses as server-sent events: ``status`` {job_id, status} whenever one of
    the given jobs (the viewer's, not final) changes, from the jobs' event channels (edge/events.py);
    ``end`` once none is left to watch."""
    who = await session.viewer(request)
    if who is None:
        raise ApiError("unauthorized", "sign in to the console first")
    ctx = _ctx(request)
    ids = [i for i in dict.fromkeys(request.query.get("ids", "").split(",")) if keys.job_partition(i) is not None][:PAGE_SIZE]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def send(event: str, data: object) -> None:
        await resp.write(b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    async with contextlib.AsyncExitStack() as stack:
        pending = [j for j, state in (await _owned_states(ctx, who, ids)).items() if state not in FINAL]
        merged: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump(job_id: str, queue: asyncio.Queue[bytes | str | None]) -> None:
            while await queue.get() is not None:
                merged.put_nowait(job_id)
            merged.put_nowait(None)  # the hub closed: end this stream

        pumps = []
        for job_id in pending:
            queue = await stack.enter_async_context(ctx.events.watch(keys.job_events(job_id)))
            pumps.append(asyncio.create_task(pump(job_id, queue)))
        stack.callback(lambda: [t.cancel() for t in pumps])
        await resp.prepare(request)
        shown = await _owned_states(ctx, who, pending)  # after subscribing: nothing after this is missed
        for job_id, state in shown.items():
            await send("status", {"job_id": job_id, "status": state})
        deadline = time.monotonic() + LIVE_MAX_S
        while (unsettled := any(state not in FINAL for state in shown.values())) and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(LIVE_RECHECK_S):  # not wait_for: it may swallow a cancel (edge/app.py)
                    changed = await merged.get()
            except TimeoutError:
                changed = ""  # look at every job again
                await resp.write(b": keep-alive\n\n")
            if changed is None:  # the event hub closed (the edge stops): the browser reconnects elsewhere
                break
            watch = [changed] if changed else [j for j, state in shown.items() if state not in FINAL]
            for job_id, state in (await _owned_states(ctx, who, watch)).items():
                if shown.get(job_id) != state:
                    shown[job_id] = state
                    await send("status", {"job_id": job_id, "status": state})
        if not unsettled:
            await send("end", {})  # nothing left to watch; otherwise the browser opens another stream
    await resp.write_eof()
    return resp


async def _owner(ctx: EdgeContext, who: Viewer, job_id: str) -> str:
    """The customer whose job this is, as the viewer may see it (404 otherwise)."""
    if who.customer is not None:
        return who.customer
    owner = await ctx.redis.hget(keys.job(job_id), "customer") if keys.job_partition(job_id) is not None else None  # type: ignore[misc]  # redis-py#2399
    if not owner:
        raise ApiError("not_found", f"no job {job_id!r} for this account")
    return str(owner)


async def _request_of(ctx: EdgeContext, job_id: str) -> dict[str, Any]:
    raw = await ctx.redis.hget(keys.job(job_id), "spec")  # type: ignore[misc]  # redis-py#2399
    spec = orjson.loads(raw) if raw else {}
    return {"method": spec.get("method"), "url": spec.get("url"), "headers": masked_headers(spec.get("headers")), "body": spec.get("body")}


def _by_region(attempts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        out.setdefault(str(attempt.get("region") or "?"), []).append(attempt)
    return out


async def job(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    ctx = _ctx(request)
    job_id = request.match_info["job_id"]
    try:
        view = await load_job_view(ctx, await _owner(ctx, who, job_id), job_id)
    except ApiError as exc:
        if exc.code == "not_found":  # the API's answer, word for word, whoever's job it is
            raise ApiError("not_found", f"no job {job_id!r} for this account") from None
        raise
    result = view.get("result") or None
    response = None
    if isinstance(result, dict):
        response = {"status_code": result.get("status_code"), "headers": masked_headers(result.get("headers")), "body": result.get("body")}
    return render(
        request,
        "job.html",
        who,
        job=view,
        request_=await _request_of(ctx, job_id),
        response=response,
        by_region=_by_region(view.get("attempts") or []),
        final=view.get("status") in FINAL,
        message=request.query.get("message"),
    )


async def job_events(request: web.Request) -> web.StreamResponse:
    """The job's events as the API streams them (edge/events.py), for the signed-in viewer."""
    who = await session.viewer(request)
    if who is None:
        raise ApiError("unauthorized", "sign in to the console first")
    ctx = _ctx(request)
    job_id = request.match_info["job_id"]
    try:
        owner = await _owner(ctx, who, job_id)
        await load_job_view(ctx, owner, job_id)
    except ApiError as exc:
        if exc.code == "not_found":
            raise ApiError("not_found", f"no job {job_id!r} for this account") from None
        raise

    async def view() -> dict[str, Any]:
        return await load_job_view(ctx, owner, job_id)

    return await stream_job_events(request, ctx.events, view)


CANCEL_MESSAGES = {
    "cancelled": "Cancelled.",
    "cancel_requested": "An attempt is in flight: the job is cancelled when it ends.",
    "in_flight": "An attempt is being sent right now; try again, or cancel after the attempt.",
    "already_final": "The job had already ended.",
    "not_found": "No such job.",
}


async def cancel(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    form = await checked_form(request, who)
    ctx = _ctx(request)
    job_id = request.match_info["job_id"]
    if not CAN_CANCEL:
        raise ApiError("not_found", "cancelling is not available on this edge")
    try:
        owner = await _owner(ctx, who, job_id)
    except ApiError:
        raise ApiError("not_found", f"no job {job_id!r} for this account") from None
    after = form.get("after_attempt") == "1"
    reply = await end_job(ctx.redis, ctx.scripts, ctx.settings, job_id, customer=owner, now_ms=int(time.time() * 1000), after_attempt=after)
    if reply.outcome is CancelOutcome.NOT_FOUND:
        raise ApiError("not_found", f"no job {job_id!r} for this account")
    raise web.HTTPSeeOther(
        request.app.router["console_job"].url_for(job_id=job_id).with_query(message=CANCEL_MESSAGES[reply.outcome.value])
    )


# -- domains ---------------------------------------------------------------------------


async def domain_rows(ctx: EdgeContext, domains_: list[str], customer: str | None) -> list[dict[str, Any]]:
    """Each domain as the pacing Limiter describes it (for ``customer``'s scope when given, with its open jobs there)."""
    limiter = ctx.worker.limiter
    scopes = await limiter.scopes_for([(d, customer) for d in domains_]) if customer is not None and domains_ else {}
    rows = []
    for domain in domains_:
        who = scopes[(domain, customer)].who if customer is not None else SHARED
        view = await limiter.describe(domain, who, ctx.settings.region_ids)
        row: dict[str, Any] = {
            "domain": domain,
            "scope": "shared" if who == SHARED else "customer",
            "view": view,
            "waiting": sum(view.waiting.values()),
            "running": sum(view.running.values()),
        }
        if customer is not None:
            counts = await job_index.count_for_domain(ctx.redis, ctx.settings.partitions, customer, domain)
            row["jobs"] = {"queued": counts.queued, "in_flight": counts.in_flight, "complete": counts.complete}
        rows.append(row)
    return rows


async def domains(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    ctx = _ctx(request)
    if who.operator:
        from .operator import all_domains  # the operator's page: every domain with pacing state

        return render(request, "domains.html", who, rows=await domain_rows(ctx, await all_domains(ctx), None))
    assert who.customer is not None
    page = await job_index.list_jobs(ctx.redis, ctx.settings.partitions, who.customer, job_index.JobFilter(), limit=DOMAINS_FROM_JOBS)
    seen = list(dict.fromkeys(j.get("domain") or domain_of(j["url"]) for j in page.jobs if j.get("url")))[:MAX_DOMAINS]
    return render(request, "domains.html", who, rows=await domain_rows(ctx, seen, who.customer))


# -- dead letters ----------------------------------------------------------------------


def _matches(entry: dict[str, Any], text: str, customer: str) -> bool:
    if customer and entry.get("customer") != customer:
        return False
    if not text:
        return True
    text = text.lower()
    hay = [entry["job_id"], str(entry.get("job_status") or "")] + [
        f"{h.get('url')} {h.get('dead_reason')} {h.get('last_error')}" for h in entry.get("webhooks") or []
    ]
    return any(text in h.lower() for h in hay)


async def _dead(request: web.Request, who: Viewer, text: str, customer: str) -> list[dict[str, Any]]:
    ctx = _ctx(request)
    entries = await deliveries.list_dead(ctx.redis, ctx.settings.partitions, customer=who.customer, limit=500)
    return [e for e in entries if _matches(e, text, customer)]


async def dead(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    text = request.query.get("q", "").strip()[:200]
    customer = request.query.get("customer", "").strip()[:200] if who.operator else ""
    entries = await _dead(request, who, text, customer)
    return render(request, "dead.html", who, entries=entries, q=text, customer=customer, message=request.query.get("message"))


async def replay_one(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    await checked_form(request, who)
    ctx = _ctx(request)
    job_id = request.match_info["job_id"]
    n = await deliveries.replay(ctx.redis, ctx.scripts, job_id, ctx.settings.region_ids, ctx.settings.job_ttl_s, customer=who.customer)
    if n is None:
        raise ApiError("not_found", "no webhook deliveries for that job")
    raise web.HTTPSeeOther(request.app.router["console_dead"].url_for().with_query(message=f"Replayed {n} webhook(s) of {job_id}."))


async def replay_matching(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    form = await checked_form(request, who)
    ctx = _ctx(request)
    text = form.get("q", "").strip()[:200]
    customer = form.get("customer", "").strip()[:200] if who.operator else ""
    jobs_n = hooks_n = 0
    for entry in await _dead(request, who, text, customer):
        n = await deliveries.replay(
            ctx.redis, ctx.scripts, entry["job_id"], ctx.settings.region_ids, ctx.settings.job_ttl_s, customer=who.customer
        )
        if n is not None:
            jobs_n, hooks_n = jobs_n + 1, hooks_n + n
    query = {"message": f"Replayed {hooks_n} webhook(s) of {jobs_n} job(s)."}
    raise web.HTTPSeeOther(request.app.router["console_dead"].url_for().with_query(query))


# -- schedules ------------------------------------------------------------------------


async def schedules_page(request: web.Request) -> web.StreamResponse:
    """The customer's schedules (``/api/v1/schedules``), oldest first; the operator picks a customer."""
    who = await signed_in(request)
    ctx = _ctx(request)
    customers: list[str] = []
    customer = who.customer
    if who.operator:
        customers = await customers_of(ctx)
        customer = request.query.get("customer") or (customers[0] if customers else None)
    views: list[dict[str, Any]] = []
    if customer is not None:
        ids = sorted(await ctx.redis.smembers(keys.customer_schedules(customer)))  # type: ignore[misc]  # redis-py#2399
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(keys.schedule(schedule_id))
            rows = await pipe.execute()
        views = [schedule_view(sid, row) for sid, row in zip(ids, rows) if row and row.get("customer") == customer]
        views.sort(key=lambda v: (v["created_at_ms"] or 0, v["schedule_id"]))
    return render(request, "schedules.html", who, schedules=views, customers=customers, customer=customer)


# -- usage and webhook secrets -----------------------------------------------------------


async def usage(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    ctx = _ctx(request)
    customers = [who.customer] if who.customer is not None else await customers_of(ctx, limit=100)
    rows = [await ctx.quotas.usage(c) for c in customers]
    return render(request, "usage.html", who, rows=rows)


async def _secrets_view(ctx: EdgeContext, customer: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """(the stored primary as kept, the masked view or None, an error)."""
    primary, secondary = await ctx.redis.hmget(keys.webhook_secrets(customer), ["primary", "secondary"])  # type: ignore[misc]  # redis-py#2399
    try:
        opened = open_webhook_secrets(SecretBox(ctx.settings.secrets_keys), customer, primary, secondary)
    except SecretBoxError:
        return primary, None, "The stored webhook secrets cannot be read on this node (EZT_SECRETS_KEYS)."
    if opened is None:
        return primary, None, None
    return primary, {"primary": mask(opened[0]), "secondary": mask(opened[1]) if opened[1] else None, "_open": opened}, None


async def secrets_page(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    if who.customer is None:
        raise ApiError("not_found", "webhook secrets are a customer's page")
    _stored, view, error = await _secrets_view(_ctx(request), who.customer)
    return render(request, "secrets.html", who, secrets=view, error=error, message=request.query.get("message"))


async def rotate_secret(request: web.Request) -> web.StreamResponse:
    who = await signed_in(request)
    form = await checked_form(request, who)
    if who.customer is None:
        raise ApiError("not_found", "webhook secrets are a customer's page")
    ctx = _ctx(request)
    new = form.get("new_secret", "")
    problem = None
    if not MIN_SECRET_CHARS <= len(new) <= MAX_SECRET_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in new):
        problem = f"A secret has {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters and no control characters."
    else:
        stored, view, problem = await _secrets_view(ctx, who.customer)
        old = view["_open"][0] if view else None
        if problem is None and old == new:
            problem = "That is already the primary secret."
        elif problem is None:
            fields = seal_webhook_secrets(SecretBox(ctx.settings.secrets_keys), who.customer, new, old)
            key = keys.webhook_secrets(who.customer)
            done = await hashes.replace(ctx.scripts.replace_hash, key, fields, unless_changed=("primary", stored))
            problem = None if done else "The secrets changed meanwhile; try again."
    message = problem or "Rotated: the new secret signs from now on, the previous one stays valid as secondary."
    raise web.HTTPSeeOther(request.app.router["console_secrets"].url_for().with_query(message=message))

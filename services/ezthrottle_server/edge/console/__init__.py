"""``GET /console``: the browser console for customers (their jobs, domains, dead letters, usage,
webhook secrets) and the operator (regions, admission, leadership, every domain and customer).

Server-rendered with aiohttp-jinja2 (autoescaped templates in ``templates/``); ``static/`` holds the
one stylesheet and the one script (live job statuses, and a job's events over the API's SSE stream).
Both ship in the package. Sign-in, cookies, CSRF and the Content-Security-Policy: ``session.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import operator, pages, session

HERE = Path(__file__).parent


def _when(ms: object) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


ROUTES = [
    web.get("/console", pages.index, name="console"),
    web.get("/console/signin", pages.sign_in_form, name="console_signin"),
    web.post("/console/signin", pages.sign_in),
    web.post("/console/signout", pages.sign_out, name="console_signout"),
    web.get("/console/jobs", pages.jobs, name="console_jobs"),
    web.get("/console/jobs/statuses", pages.statuses, name="console_statuses"),
    web.get("/console/jobs/live", pages.live_statuses, name="console_live"),
    web.get("/console/jobs/{job_id}", pages.job, name="console_job"),
    web.get("/console/jobs/{job_id}/events", pages.job_events, name="console_job_events"),
    web.post("/console/jobs/{job_id}/cancel", pages.cancel, name="console_cancel"),
    web.get("/console/domains", pages.domains, name="console_domains"),
    web.get("/console/dead", pages.dead, name="console_dead"),
    web.post("/console/dead/replay", pages.replay_matching, name="console_replay_matching"),
    web.post("/console/dead/{job_id}/replay", pages.replay_one, name="console_replay"),
    web.get("/console/schedules", pages.schedules_page, name="console_schedules"),
    web.get("/console/usage", pages.usage, name="console_usage"),
    web.get("/console/secrets", pages.secrets_page, name="console_secrets"),
    web.post("/console/secrets/rotate", pages.rotate_secret, name="console_rotate"),
    web.get("/console/regions", operator.regions, name="console_regions"),
    web.get("/console/customers", operator.customers, name="console_customers"),
    web.static("/console/static", HERE / "static", name="console_static"),
]


def add_console(app: web.Application) -> None:
    """Serve the console on ``app`` (an edge): its templates, routes and security headers."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader(__name__, "templates"),
        autoescape=True,
    )
    env.filters["when"] = _when
    app.router.add_routes(ROUTES)
    app.on_response_prepare.append(session.add_security_headers)

"""The console's routes in the edge's OpenAPI document (edge/openapi.py adds :func:`console_paths`).

They answer HTML (and a stylesheet, a script, an event stream and one small JSON object) to a browser
signed in by the ``ezt_console`` cookie, not to a Bearer key; a request without that cookie is sent to
the sign-in page (303). Errors are the API's JSON envelope.
"""

from __future__ import annotations

from typing import Any

from .session import COOKIE

_ERROR = {"$ref": "#/components/schemas/Error"}
_TEXT = {
    400: "Bad input: a request line or header too long, a body that is not a form",
    401: "Not signed in (the status and event routes)",
    403: "A form without its CSRF token, or with a wrong one",
    404: "Not found, not the signed-in customer's, or an operator's page",
    409: "Changed meanwhile",
    429: "Too many failed sign-ins from this address; see Retry-After",
    503: "The job store (Redis) is unreachable",
}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*statuses: int) -> dict[str, Any]:
    """The JSON error envelope for each status, and 400 always (a request line or header too long, say)."""
    out: dict[str, Any] = {}
    for status in sorted({400, *statuses}):
        answer: dict[str, Any] = {"description": _TEXT[status], "content": {"application/json": {"schema": _ERROR}}}
        if status in (429, 503):
            answer["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}}
        out[str(status)] = answer
    return out


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _see_other(to: str) -> dict[str, Any]:
    return {"description": f"See other: {to}", "headers": {"Location": {"schema": {"type": "string"}}}}


def _page(summary: str, *, params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (429, 503)) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Signed in by the `{COOKIE}` cookie; without it, 303 to /console/signin.",
        "security": [],
        "responses": {"200": _html("The page"), "303": _see_other("/console/signin when signed out"), **_errors(*errors)},
    }
    if params:
        op["parameters"] = params
    return op


def _form(
    summary: str, fields: dict[str, Any], *, params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = ()
) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"csrf": {"type": "string"}, **fields}}
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"A console form: signed in by the `{COOKIE}` cookie, with the page's CSRF token (`csrf`).",
        "security": [],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}},
        "responses": {
            "200": _html("The next page (after the 303)"),
            "303": _see_other("the next page"),
            **_errors(403, *errors, 429, 503),
        },
    }
    if params:
        op["parameters"] = params
    return op


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


def console_paths() -> dict[str, Any]:
    return {
        "/console": {"get": _page("The console: the signed-in viewer's first page, else the sign-in page")},
        "/console/signin": {
            "get": _page(
                "The sign-in form (sets its CSRF cookie)", params=[_query("error", "invalid or limited: why the last try failed")]
            ),
            "post": _form(
                "Sign in with an API key or the operator token (failures count toward the failed-login limit)",
                {"secret": {"type": "string"}},
            ),
        },
        "/console/signout": {"post": _form("Sign out", {})},
        "/console/jobs": {
            "get": _page(
                "The customer's jobs (the operator: one customer's), newest first, with filters and a cursor",
                params=[
                    _query(n, d)
                    for n, d in (
                        ("status", "one status"),
                        ("domain", "host or host:port"),
                        ("root_job_id", "a workflow's root"),
                        ("cursor", "the next page's position"),
                        ("customer", "the operator's choice of customer"),
                    )
                ],
            )
        },
        "/console/jobs/statuses": {
            "get": {
                "summary": "The statuses of the viewer's jobs among `ids` (the job list's live updates)",
                "security": [],
                "parameters": [_query("ids", "comma list of job ids (at most 100 count)")],
                "responses": {
                    "200": {
                        "description": "{job_id: status}",
                        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    },
                    **_errors(401, 429, 503),
                },
            }
        },
        "/console/jobs/live": {
            "get": {
                "summary": "The viewer's jobs among `ids` that are not final, watched: `status` {job_id, status} events, then `end`",
                "security": [],
                "parameters": [_query("ids", "comma list of job ids (the first 25 count)")],
                "responses": {
                    "200": {
                        "description": "Server-sent events, each one a JSON object",
                        "content": {"text/event-stream": {"schema": {"type": "object"}}},
                    },
                    **_errors(401, 429, 503),
                },
            }
        },
        "/console/jobs/{job_id}": {
            "get": _page("A job: attempts per region, workflow, webhooks, request and response", params=[JOB_ID], errors=(404, 429, 503))
        },
        "/console/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's live events (as GET /api/v1/jobs/{id}/events)",
                "security": [],
                "parameters": [JOB_ID],
                "responses": {
                    "200": {
                        "description": "Server-sent events, each one a JSON object",
                        "content": {"text/event-stream": {"schema": {"type": "object"}}},
                    },
                    **_errors(401, 404, 429, 503),
                },
            }
        },
        "/console/jobs/{job_id}/cancel": {
            "post": _form("Cancel the job", {"after_attempt": {"type": "string"}}, params=[JOB_ID], errors=(404,))
        },
        "/console/domains": {"get": _page("The customer's domains (the operator: every domain): limit, source, circuit, queues")},
        "/console/dead": {
            "get": _page(
                "Dead-lettered webhooks, filtered", params=[_query("q", "text to match"), _query("customer", "the operator's filter")]
            )
        },
        "/console/dead/replay": {
            "post": _form("Replay every dead letter the filter matches", {"q": {"type": "string"}, "customer": {"type": "string"}})
        },
        "/console/dead/{job_id}/replay": {"post": _form("Replay one job's dead webhooks", {}, params=[JOB_ID], errors=(404,))},
        "/console/schedules": {"get": _page("A customer's schedules", params=[_query("customer", "operator's pick")])},
        "/console/usage": {"get": _page("This month's usage against the tier")},
        "/console/secrets": {"get": _page("The webhook secrets, masked (a customer's page)", errors=(404, 429, 503))},
        "/console/secrets/rotate": {"post": _form("Rotate the webhook secret", {"new_secret": {"type": "string"}}, errors=(404,))},
        "/console/regions": {"get": _page("The operator's view: regions, admission, coordinator leadership", errors=(404, 429, 503))},
        "/console/customers": {"get": _page("The operator's view: every customer", errors=(404, 429, 503))},
        "/console/static": {
            "get": {
                "summary": "The console's stylesheet and script, below this path (console.css, console.js)",
                "security": [],
                "responses": {
                    "200": {"description": "A file below it", "content": {"text/css": {"schema": {"type": "string"}}}},
                    **_errors(403, 404),
                },
            }
        },
    }

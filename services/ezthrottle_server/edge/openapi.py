"""The OpenAPI 3 description of the edge's public API, served at ``GET /openapi.json``.

Built once per app from the settings (the region ids, the body limit), so it
describes the deployment that serves it. ``tests/integration/edge/
test_openapi.py`` keeps it true: every route of the app is in it and every
operation in it is a route, and schemathesis fuzzes the running edge against
it (no 5xx, no response outside it).

Every error is the envelope ``{"error": {"code", "message", "field"?}}``
(``components/schemas/Error``); the codes are those of
:data:`~ezthrottle_server.common.errors.API_ERRORS`. Each operation lists the
statuses it can answer: authenticated routes can also answer 401, 429
(``rate_limited`` after repeated failed authentications) and 503
(``unavailable`` while Redis is unreachable).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..common.config import Settings
from ..common.errors import API_ERRORS
from ..common.job_index import MAX_MS
from ..common.jobs import (
    EXECUTION_MODES,
    MAX_KEY_LENGTH,
    MAX_REROUTES_CEILING,
    MAX_RETRIES_CEILING,
    MAX_URL_LENGTH,
    MAX_WEBHOOKS,
    METHODS,
    REGION_POLICIES,
    STEP_TYPES,
)
from ..common.schedules import MAX_EVERY_S, OVERLAPS, SCHEDULE_ID_PATTERN
from .console.openapi import console_paths
from .deliveries_api import MAX_LIMIT
from .search_api import DEFAULT_LIMIT as SEARCH_DEFAULT_LIMIT
from .search_api import MAX_LIMIT as SEARCH_MAX_LIMIT
from .search_api import STATUSES as SEARCH_STATUSES
from .secrets_api import MAX_SECRET_CHARS, MIN_SECRET_CHARS
from .workflow_api import RELATIONS

PATH = "/openapi.json"
JOB_ID_PATTERN = r"^job_[0-9]{10,16}_[0-9a-f]{16}p[0-9]{1,4}$"
JOB_STATES = ("queued", "scheduled", "running", "success", "failed", "cancelled", "expired")

_ERROR_TEXT = {
    400: "Bad input; `error.field` names the field when there is one",
    401: "Missing, malformed, unknown or revoked API key",
    404: "Not found, or not this API key's customer's (never 403)",
    405: "The proxy target does not take this method",
    409: "Conflict: already claimed, or changed meanwhile; a cancel: `in_flight` (an attempt under way) or `already_final`",
    413: "The body is larger than the limit",
    415: "The body is not JSON",
    422: "The target or a webhook is an address the outbound policy refuses",
    429: "Rate limited (failed authentications), over the monthly quota, shed by admission control, or too many bulk actions"
    " running (too_many_bulk_actions); see Retry-After",
    503: "The job store (Redis) is unreachable; nothing was accepted",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        headers = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}} if status in (429, 503) else None
        out[str(status)] = _json(_ref("Error"), _ERROR_TEXT[status], headers)
    return out


AUTHED = (401, 429, 503)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _job_schemas(settings: Settings) -> dict[str, Any]:
    regions = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "enum": list(settings.region_ids)}}
    url = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_URL_LENGTH,
        "pattern": "^https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?(:[1-9][0-9]{0,3})?(/[!-~]*)?$",
        "example": "https://api.example.com/v1/charges",
    }
    codes = {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}}
    step: dict[str, Any] = {
        "type": "object",
        "description": "A job, as the published SDK sends it. Unknown fields are refused (400 unknown_field).",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": url,
            "method": {"type": "string", "enum": sorted(METHODS)},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                "additionalProperties": {"type": "string", "pattern": "^[^\\r\\n\\x00]*$"},
                "description": "Sent as given; Host, Content-Length, Transfer-Encoding, Connection, Upgrade, TE and Trailer are refused",
            },
            "body": _nullable({"type": "string"}),
            "metadata": {"type": "object"},
            "webhooks": {
                "type": "array",
                "maxItems": MAX_WEBHOOKS,
                "items": {
                    "type": "object",
                    "required": ["url"],
                    "additionalProperties": False,
                    "properties": {"url": url, "has_quorum_vote": {"type": "boolean"}, "regions": _nullable(regions)},
                },
            },
            "webhook_quorum": {"type": "integer", "minimum": 1},
            "regions": _nullable(regions),
            "region_policy": {"type": "string", "enum": list(REGION_POLICIES)},
            "execution_mode": {"type": "string", "enum": list(EXECUTION_MODES)},
            "retry_policy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES_CEILING},
                    "max_reroutes": {"type": "integer", "minimum": 0, "maximum": MAX_REROUTES_CEILING},
                    "retry_codes": codes,
                    "reroute_codes": codes,
                },
            },
            "fallback_job": _nullable(_ref("FallbackJob")),
            "on_success": _nullable(_ref("Job")),
            "on_failure": _nullable(_ref("Job")),
            "on_failure_timeout_ms": _nullable({"type": "integer", "minimum": 1}),
            "idempotent_key": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}),
            "retry_at": _nullable({"type": "integer", "minimum": 0, "description": "ms since the epoch"}),
            "start_before_ms": _nullable(
                {
                    "type": "integer",
                    "minimum": 0,
                    "description": "ms since the epoch, in the future (at most the retry_at horizon ahead, after retry_at): "
                    "a job not started by then ends `expired` and is never sent",
                }
            ),
            "type": {"type": "string", "enum": list(STEP_TYPES)},
            "flow_control": _nullable(
                {
                    "type": "object",
                    "required": ["key"],
                    "additionalProperties": False,
                    "description": "A limit shared by this customer's jobs with the same key, in every region, on top of the domain's",
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": 128},
                        "rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000, "description": "requests/s"},
                        "parallelism": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "sends at once"},
                    },
                }
            ),
        },
    }
    trigger = {
        "oneOf": [
            {"type": "object", "additionalProperties": False, "maxProperties": 0, "description": "always"},
            {
                "type": "object",
                "required": ["type", "codes"],
                "additionalProperties": False,
                "properties": {"type": {"const": "on_error"}, "codes": codes},
            },
            {
                "type": "object",
                "required": ["type", "timeout_ms"],
                "additionalProperties": False,
                "properties": {"type": {"const": "on_timeout"}, "timeout_ms": {"type": "integer", "minimum": 1}},
            },
        ]
    }
    fallback = {**step, "properties": {**step["properties"], "trigger": trigger}}
    hook_view = {
        "type": "object",
        "required": ["url", "has_quorum_vote", "state"],
        "properties": {
            "url": {"type": "string"},
            "has_quorum_vote": {"type": "boolean"},
            "regions": _nullable({"type": "array", "items": {"type": "string"}}),
            "state": {"type": "string", "enum": ["pending", "retrying", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "last_status_code": _nullable({"type": "integer"}),
            "last_error": _nullable({"type": "string"}),
            "last_attempt_at_ms": _nullable({"type": "integer"}),
            "next_attempt_at_ms": _nullable({"type": "integer"}),
            "delivered_at_ms": _nullable({"type": "integer"}),
            "delivered_from": _nullable({"type": "string"}),
            "dead_reason": _nullable({"type": "string"}),
            "dead_at_ms": _nullable({"type": "integer"}),
        },
    }
    result = {
        "type": "object",
        "required": ["status_code", "headers", "body"],
        "properties": {
            "status_code": {"type": "integer"},
            "headers": {"type": "object"},
            "body": {"type": "string"},
            "truncated": {"type": "boolean"},
        },
    }
    view = {
        "type": "object",
        "required": [
            "job_id",
            "status",
            "idempotent_key",
            "url",
            "method",
            "metadata",
            "regions",
            "winner_region",
            "created_at_ms",
            "started_at_ms",
            "finished_at_ms",
            "execution_mode",
            "regions_tried",
            "retries",
            "reroutes",
            "region_outcomes",
            "error",
            "result",
            "attempts",
            "webhooks",
        ],
        "properties": {
            "job_id": {"type": "string", "pattern": JOB_ID_PATTERN},
            "status": {"type": "string", "enum": list(JOB_STATES)},
            "idempotent_key": {"type": "string"},
            "url": {"type": "string"},
            "method": {"type": "string"},
            "metadata": {"type": "object"},
            "regions": {"type": "array", "items": {"type": "string"}},
            "winner_region": _nullable({"type": "string"}),
            "created_at_ms": _nullable({"type": "integer"}),
            "started_at_ms": _nullable({"type": "integer"}),
            "finished_at_ms": _nullable({"type": "integer"}),
            "start_before_ms": _nullable({"type": "integer"}),
            "cancel_requested": {"type": "boolean", "description": "Cancelled once its attempt in flight ends (?after_attempt=true)"},
            "schedule_id": _nullable({"type": "string", "description": "The schedule that fired it (/api/v1/schedules)"}),
            "execution_mode": {"type": "string", "enum": list(EXECUTION_MODES)},
            "regions_tried": {"type": "array", "items": {"type": "string"}},
            "retries": {"type": "integer"},
            "reroutes": {"type": "integer"},
            "evacuations": {
                "type": "array",
                "description": "Moves out of a region judged down, each also counted in reroutes",
                "items": {
                    "type": "object",
                    "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
            "maybe_sent": {"type": "boolean", "description": "An attempt was cut off by a dead node and may have reached the target"},
            "waiting_on": _nullable(
                {"type": "string", "enum": ["circuit_open", "domain_paused"], "description": "What holds a waiting job beyond its turn"}
            ),
            "region_outcomes": {"type": "object"},
            "error": _nullable({"type": "string"}),
            "result": _nullable({"type": "object"}),
            "attempts": {"type": "array", "items": {"type": "object"}},
            "webhooks": _nullable(
                {
                    "type": "object",
                    "required": ["quorum", "votes", "quorum_met", "endpoints"],
                    "properties": {
                        "quorum": {"type": "integer"},
                        "votes": {"type": "integer"},
                        "quorum_met": {"type": "boolean"},
                        "quorum_met_at_ms": _nullable({"type": "integer"}),
                        "endpoints": {"type": "array", "items": hook_view},
                    },
                }
            ),
        },
    }
    accepted = {
        "type": "object",
        "required": ["job_id", "status", "idempotent_key"],
        "additionalProperties": False,
        "properties": {
            "job_id": {"type": "string", "pattern": JOB_ID_PATTERN},
            "status": {"type": "string", "enum": ["queued", "racing", "duplicate"]},
            "idempotent_key": {"type": "string"},
        },
    }
    cancelled = {
        "type": "object",
        "required": ["job_id", "status", "children_cancelled", "children_cancel_requested"],
        "properties": {
            "job_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["cancelled", "cancel_requested", "already_final"],
                "description": "already_final: the job had ended, and what was pending below it in its workflow is cancelled",
            },
            "children_cancelled": {"type": "integer", "minimum": 0},
            "children_cancel_requested": {"type": "integer", "minimum": 0},
        },
    }
    outcomes = ["cancelled", "cancel_requested", "in_flight", "already_final", "not_found"]
    bulk = {
        "type": "object",
        "description": "job_ids, or filter (GET /api/v1/jobs's filters; jobs not yet final unless status says otherwise)",
        "additionalProperties": False,
        "properties": {
            "job_ids": {"type": "array", "maxItems": 1000, "items": {"type": "string", "minLength": 1, "maxLength": 200}},
            "filter": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "description": "a status, or a comma list"},
                    "domain": {"type": "string"},
                    "created_after": {"type": "integer", "minimum": 0},
                    "created_before": {"type": "integer", "minimum": 0},
                    "root_job_id": {"type": "string"},
                },
                "patternProperties": {"^metadata\\..+$": {"type": ["string", "number", "boolean", "null"]}},
            },
            "after_attempt": {"type": "boolean"},
        },
    }
    bulk_answer = {
        "type": "object",
        "description": "Each job's outcome: by job_ids, or a filter's action done in the call (then with the action's fields too)",
        "required": ["counts", "jobs"],
        "properties": {
            "counts": {"type": "object", "properties": {o: {"type": "integer", "minimum": 0} for o in outcomes}},
            "jobs": {"type": "object", "additionalProperties": {"type": "string", "enum": outcomes}},
            "more": {"type": "boolean", "description": "always false (a large filter runs in the background)"},
        },
    }
    count = {"type": "integer", "minimum": 0}
    bulk_action = {
        "type": "object",
        "description": "A bulk cancel by filter (common/bulk.py): its progress, readable from any edge",
        "required": [
            "action_id", "state", "matched", "matched_exact", "cancelled", "cancel_requested", "in_flight", "skipped_final",
            "not_found", "created_at_ms", "updated_at_ms", "finished_at_ms", "error",
        ],
        "properties": {
            "action_id": {"type": "string"},
            "state": {"type": "string", "enum": ["running", "done", "failed"]},
            "matched": {**count, "description": "jobs matched: exact when matched_exact, else the count so far (a lower bound)"},
            "matched_exact": {"type": "boolean"},
            "cancelled": count,
            "cancel_requested": {**count, "description": "after_attempt: cancelled once the attempt in flight ends"},
            "in_flight": {**count, "description": "an attempt under way: not cancelled (after_attempt=false)"},
            "skipped_final": {**count, "description": "already final"},
            "not_found": count,
            "created_at_ms": {"type": "integer"},
            "updated_at_ms": {"type": "integer"},
            "finished_at_ms": _nullable({"type": "integer"}),
            "error": _nullable({"type": "string"}),
        },
    }  # fmt: skip
    batch = {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": settings.max_batch_jobs, "items": _ref("Job")}},
    }
    refused = _error_schema({"retry_after_s": {"type": "integer", "minimum": 0, "description": "when to submit this job again"}})
    batch_answer = {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "minItems": 1, "items": {"anyOf": [accepted, refused]}}},
    }
    return {
        "JobBatch": batch, "JobBatchAnswer": batch_answer,
        "Job": step, "FallbackJob": fallback, "JobView": view, "JobResult": result, "JobAccepted": accepted, "WebhookState": hook_view,
        "JobCancelled": cancelled, "BulkCancel": bulk, "BulkCancelled": bulk_answer, "BulkCancelAction": bulk_action,
    }  # fmt: skip


def _error_schema(extra: dict[str, Any]) -> dict[str, Any]:
    """``{"error": {"code", "message", ...extra}}``: every error's body (``extra``: what this one may add)."""
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": sorted(API_ERRORS)},
                    "message": {"type": "string", "minLength": 1},
                    **extra,
                },
            }
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    secret = {"type": "string", "minLength": MIN_SECRET_CHARS, "maxLength": MAX_SECRET_CHARS, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
    masked: dict[str, Any] = {
        "type": "object",
        "required": ["customer_id", "primary_secret", "secondary_secret", "has_secondary"],
        "properties": {
            "customer_id": {"type": "string"},
            "primary_secret": {"type": "string"},
            "secondary_secret": _nullable({"type": "string"}),
            "has_secondary": {"type": "boolean"},
        },
    }
    admission = {
        "type": "object",
        "required": ["accepting", "reason"],
        "properties": {"accepting": {"type": "boolean"}, "reason": _nullable({"type": "string"})},
    }
    dead_replay = {
        "type": "object",
        "required": ["replay_id", "state", "matched", "jobs_done", "webhooks_replayed", "created_at_ms", "finished_at_ms"],
        "properties": {
            "replay_id": {"type": "string"},
            "action_id": {"type": "string", "description": "the same as replay_id: a bulk action (common/bulk.py)"},
            "state": {"type": "string", "enum": ["running", "done", "failed"]},
            "matched_exact": {"type": "boolean"},
            "updated_at_ms": {"type": "integer"},
            "error": _nullable({"type": "string"}),
            "matched": {"type": "integer", "minimum": 0},
            "jobs_done": {"type": "integer", "minimum": 0},
            "webhooks_replayed": {"type": "integer", "minimum": 0},
            "created_at_ms": {"type": "integer"},
            "finished_at_ms": _nullable({"type": "integer"}),
        },
    }
    return {
        "DeadReplay": dead_replay,
        "Error": _error_schema({"field": {"type": "string"}}),
        **_job_schemas(settings),
        "WebhookSecretsIn": {
            "type": "object",
            "required": ["primary_secret"],
            "additionalProperties": False,
            "properties": {"primary_secret": secret, "secondary_secret": _nullable(secret)},
        },
        "WebhookSecretsRotateIn": {
            "type": "object",
            "required": ["new_secret"],
            "additionalProperties": False,
            "properties": {"new_secret": secret},
        },
        "WebhookSecrets": masked,
        "WebhookSecretsSaved": {
            **masked,
            "required": ["status", "message", *masked["required"]],
            "properties": {**masked["properties"], "status": {"const": "ok"}, "message": {"type": "string"}},
        },
        "FlowControlKey": {
            "type": "object",
            "required": ["key", "rate", "parallelism", "in_flight", "paused", "paused_until_ms"],
            "properties": {
                "key": {"type": "string"},
                "rate": _nullable({"type": "number"}),
                "parallelism": _nullable({"type": "integer"}),
                "in_flight": {"type": "integer", "minimum": 0},
                "paused": {"type": "boolean"},
                "paused_until_ms": _nullable({"type": "integer"}),
            },
        },
        "Usage": {
            "type": "object",
            "required": ["customer_id", "month", "tier", "count", "included", "cap", "overage", "remaining", "storage"],
            "properties": {
                "customer_id": {"type": "string"},
                "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                "tier": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "included": {"type": "integer"},
                "cap": _nullable({"type": "integer"}),
                "overage": {"type": "integer", "minimum": 0},
                "remaining": _nullable({"type": "integer", "minimum": 0}),
                "storage": {
                    "type": "object",
                    "description": "What the customer's jobs hold of Redis: the records of those not final, and of the finished "
                    "ones with their results until they expire; new jobs are refused (429 overloaded) past budget_bytes",
                    "required": ["bytes", "budget_bytes"],
                    "properties": {
                        "bytes": {"type": "integer", "minimum": 0},
                        "budget_bytes": _nullable({"type": "integer", "minimum": 1}),
                    },
                },
            },
        },
        "DeadLetters": {
            "type": "object",
            "required": ["dead", "count"],
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "dead": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["job_id", "dead_at_ms", "job_status", "webhooks"],
                        "properties": {
                            "job_id": {"type": "string"},
                            "dead_at_ms": {"type": "integer"},
                            "job_status": _nullable({"type": "string"}),
                            "webhooks": {"type": "array", "items": _ref("WebhookState")},
                        },
                    },
                },
            },
        },
        "ProxyEnvelope": {
            "type": "object",
            "description": "The envelope of the published SDK (ezthrottle==1.3.0); the target's host is ignored.",
            "required": ["target_url", "method"],
            "additionalProperties": False,
            "properties": {
                "scope": _nullable({"type": "string"}),
                "metric_name": _nullable({"type": "string"}),
                "target_url": {"type": "string", "pattern": "^https?://[^/?#@\\s]+/api/v1/(jobs(/[^/?#]+)?|webhook-secrets)/?$"},
                "method": {"type": "string", "enum": ["GET", "POST", "DELETE"]},
                "headers": _nullable({"type": "object", "additionalProperties": {"type": "string"}}),
                "body": _nullable({"type": "string"}),
            },
        },
        "ProxyAnswer": {
            "type": "object",
            "required": ["status", "forwarded_response"],
            "properties": {
                "status": {"const": "allowed"},
                "forwarded_response": {
                    "type": "object",
                    "required": ["status_code", "headers", "body"],
                    "properties": {
                        "status_code": {"type": "integer"},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "body": {"type": "string"},
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "node", "admission"],
            "properties": {"status": {"const": "ok"}, "node": {"type": "string"}, "admission": admission},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "redis", "region", "admission"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "redis": {"type": "boolean"},
                "region": _nullable({"type": "string"}),
                "admission": admission,
            },
        },
        "Regions": {
            "type": "object",
            "required": ["regions", "this_region"],
            "properties": {
                "this_region": _nullable({"type": "string"}),
                "regions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "state", "edges"],
                        "properties": {
                            "id": {"type": "string", "enum": list(settings.region_ids)},
                            "state": {"type": "string"},
                            "reason": _nullable({"type": "string"}),
                            "edges": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
    }


def _text(ctype: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {ctype: {"schema": {"type": "string"}}}}


JOB_EXAMPLES = {
    "simple": {"value": {"url": "https://api.example.com/v1/charges", "method": "POST", "body": '{"amount": 1000}'}},
    "raced_with_webhooks": {
        "value": {
            "url": "https://api.example.com/v1/notify",
            "method": "POST",
            "headers": {"Idempotency-Key": "order-42"},
            "regions": None,
            "webhooks": [{"url": "https://hooks.example.com/ezthrottle"}],
            "retry_policy": {"max_retries": 2, "retry_codes": [429, 503]},
            "idempotent_key": "order-42",
        }
    },
    "chain": {
        "value": {
            "url": "https://api.example.com/v1/primary",
            "fallback_job": {"url": "https://backup.example.com/v1/primary", "trigger": {"type": "on_error", "codes": [500, 502]}},
            "on_success": {"url": "https://api.example.com/v1/done", "type": "frugal"},
        }
    },
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    authed: bool = True,
    body: str | None = None,
    examples: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        media: dict[str, Any] = {"schema": _ref(body)}
        if examples:
            media["examples"] = examples
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    if not authed:
        op["security"] = []
    op.update(extra)
    return op


def _search_ops() -> dict[str, Any]:
    """``GET /api/v1/jobs`` (list and search) and ``GET /api/v1/domains/{host}`` (edge/search_api.py)."""
    status_word = "(" + "|".join(SEARCH_STATUSES) + ")"
    ms = {"type": "integer", "minimum": 0, "maximum": MAX_MS}

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    summary = {
        "type": "object",
        "required": [
            "job_id", "status", "created_at_ms", "started_at_ms", "finished_at_ms", "url", "method", "domain", "metadata",
            "idempotent_key", "regions", "winner_region", "error", "workflow",
        ],
        "properties": {
            "job_id": {"type": "string", "pattern": JOB_ID_PATTERN},
            "status": {"type": "string", "enum": list(SEARCH_STATUSES)},
            "created_at_ms": {"type": "integer"},
            "started_at_ms": _nullable({"type": "integer"}),
            "finished_at_ms": _nullable({"type": "integer"}),
            "url": {"type": "string"},
            "method": {"type": "string"},
            "domain": {"type": "string", "description": "host:port of the url"},
            "metadata": {"type": "object"},
            "idempotent_key": _nullable({"type": "string"}),
            "regions": {"type": "array", "items": {"type": "string"}},
            "winner_region": _nullable({"type": "string"}),
            "error": _nullable({"type": "string"}),
            "workflow": _nullable(
                {
                    "type": "object",
                    "required": ["root_job_id", "parent_job_id", "relation"],
                    "properties": {
                        "root_job_id": {"type": "string"},
                        "parent_job_id": _nullable({"type": "string"}),
                        "relation": _nullable({"type": "string"}),
                    },
                }
            ),
        },
    }  # fmt: skip
    listing = {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "jobs": {"type": "array", "maxItems": SEARCH_MAX_LIMIT, "items": summary},
            "next_cursor": _nullable({"type": "string", "description": "Pass it as `cursor` for the next page; null: nothing left"}),
        },
    }
    list_op = _op(
        "The key's customer's jobs, newest first, filtered; `metadata.<key>=<value>` filters too (exact match)",
        {
            "200": _json(listing, "A page; it may be short, even empty, with a next_cursor (a request reads a bounded number of jobs)"),
            **_errors(400, *AUTHED),
        },
        description="Every filter must match. Another customer's jobs are never listed. "
        "A bad parameter is a 400 naming it (`error.field`). `metadata.<key>=<value>` matches a top-level metadata value: "
        "strings as given, numbers, booleans and null as JSON (`metadata.attempt=3`).",
        parameters=[
            query("status", {"type": "string", "pattern": f"^{status_word}(,{status_word})*$"}, "One status, or a comma list"),
            # No maxLength in the document (the server refuses above 512 characters): a fuzzer's
            # overlong values would outgrow aiohttp's request line (8190 bytes) before reaching the route.
            query("domain", {"type": "string", "minLength": 1}, "host or host:port of the url (bare host: port 443)"),
            query("created_after", ms, "ms since the epoch, exclusive"),
            query("created_before", ms, "ms since the epoch, exclusive"),
            query("root_job_id", {"type": "string", "pattern": JOB_ID_PATTERN}, "A workflow: its root job and every job below it"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": SEARCH_MAX_LIMIT, "default": SEARCH_DEFAULT_LIMIT}, "Per page"),
            query("cursor", {"type": "string", "minLength": 1}, "next_cursor of the previous page, as it came"),
        ],
    )
    source = {
        "type": "string",
        "enum": ["default", "config", "header", "learned"],
        "description": "default (the server's), config (domains.yaml), header (the target's own) or learned (from its 429s)",
    }
    domain_view = {
        "type": "object",
        "required": ["domain", "limit", "paused", "paused_until_ms", "circuit", "jobs", "flow_control_keys"],
        "properties": {
            "domain": {"type": "string", "description": "host:port"},
            "limit": {
                "type": "object",
                "required": ["scope", "rps", "rps_source", "max_concurrent", "max_concurrent_source", "burst"],
                "properties": {
                    "scope": {"type": "string", "enum": ["shared", "customer"], "description": "shared, or this customer's own"},
                    "rps": {"type": "number"},
                    "rps_source": source,
                    "max_concurrent": {"type": "integer", "description": "requests in flight per edge node"},
                    "max_concurrent_source": source,
                    "burst": {"type": "integer"},
                },
            },
            "paused": {"type": "boolean", "description": "Retry-After from the target (429/503) holds every send"},
            "paused_until_ms": _nullable({"type": "integer"}),
            "circuit": {
                "type": "object",
                "required": ["state", "open_until_ms"],
                "description": "The domain's circuit breaker: open after repeated infrastructure failures",
                "properties": {
                    "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                    "open_until_ms": _nullable({"type": "integer"}),
                },
            },
            "jobs": {
                "type": "object",
                "required": ["queued", "in_flight", "complete"],
                "description": "This customer's jobs to the domain not yet final, counted from its job index",
                "properties": {
                    "queued": {"type": "integer", "minimum": 0, "description": "queued or scheduled"},
                    "in_flight": {"type": "integer", "minimum": 0, "description": "an attempt under way"},
                    "complete": {"type": "boolean", "description": "false: more jobs than one request reads; the counts are lower bounds"},
                },
            },
            "flow_control_keys": {
                "type": "array",
                "items": _ref("FlowControlKey"),
                "description": "Your flow-control keys whose jobs went to this domain, and their state",
            },
        },
    }
    host = {
        "name": "host",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "host or host:port (at most 512 characters)",
    }
    domain_op = _op(
        "A target domain as this customer sees it: its limit and source, pause, and the customer's jobs there not yet final",
        {"200": _json(domain_view, "The domain"), **_errors(400, 404, *AUTHED)},
        parameters=[host],
    )
    return {"list": list_op, "domain": domain_op}


def _schedule_paths() -> dict[str, Any]:
    """``/api/v1/schedules`` (edge/schedules_api.py, common/schedules.py)."""
    timing = {
        "cron": {"type": "string", "description": "5 fields (or @hourly...), read in timezone", "example": "*/5 * * * *"},
        "every_s": {"type": "integer", "minimum": 1, "maximum": MAX_EVERY_S},
        "timezone": {"type": "string", "maxLength": 64, "description": "IANA name, default UTC", "example": "UTC"},
        "overlap": {
            "type": "string",
            "enum": list(OVERLAPS),
            "description": "skip (default): no tick while the last fired job is not final",
        },
    }
    create = {"type": "object", "required": ["job"], "additionalProperties": False, "properties": {**timing, "job": _ref("Job")}}
    patch = {"type": "object", "additionalProperties": False, "properties": {**timing, "job": _ref("Job"), "paused": {"type": "boolean"}}}
    ms = _nullable({"type": "integer"})
    schedule = {
        "type": "object",
        "required": [
            "schedule_id",
            "cron",
            "every_s",
            "timezone",
            "overlap",
            "paused",
            "next_fire_at_ms",
            "job",
            "last_job_id",
            "last_error",
        ],
        "properties": {
            "schedule_id": {"type": "string", "pattern": SCHEDULE_ID_PATTERN},
            "cron": _nullable({"type": "string"}),
            "every_s": _nullable({"type": "integer"}),
            "timezone": {"type": "string"},
            "overlap": {"type": "string", "enum": list(OVERLAPS)},
            "paused": {"type": "boolean"},
            "next_fire_at_ms": ms,
            "job": {"type": "object"},
            "created_at_ms": ms,
            "updated_at_ms": ms,
            "last_fired_at_ms": ms,
            "last_job_id": _nullable({"type": "string"}),
            "last_error": _nullable({"type": "string", "description": "why the last tick created no job (quota_exceeded: ...)"}),
            "last_skipped_at_ms": ms,
            "fired_count": {"type": "integer", "minimum": 0},
            "skipped_count": {"type": "integer", "minimum": 0},
        },
    }
    schedule_id = {"name": "schedule_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    return {
        "/api/v1/schedules": {
            "post": _op(
                "Create a schedule: the job fired on a cron expression or every every_s seconds, each tick once",
                {"201": _json(schedule, "Created"), **_errors(400, 413, 415, 422, *AUTHED)},
                **body(create),
            ),
            "get": _op(
                "Your schedules",
                {
                    "200": _json(
                        {"type": "object", "required": ["schedules"], "properties": {"schedules": {"type": "array", "items": schedule}}},
                        "Schedules",
                    ),
                    **_errors(*AUTHED),
                },
            ),
        },
        "/api/v1/schedules/{schedule_id}": {
            "get": _op(
                "One of your schedules", {"200": _json(schedule, "The schedule"), **_errors(404, *AUTHED)}, parameters=[schedule_id]
            ),
            "patch": _op(
                "Pause, resume or change a schedule (a new timing or a resume counts the next tick from now)",
                {"200": _json(schedule, "Changed"), **_errors(400, 404, 413, 415, 422, *AUTHED)},
                parameters=[schedule_id],
                **body(patch),
            ),
            "delete": _op(
                "Delete a schedule (jobs it fired are not touched)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["schedule_id", "deleted"],
                            "properties": {"schedule_id": {"type": "string"}, "deleted": {"const": True}},
                        },
                        "Deleted",
                    ),
                    **_errors(404, *AUTHED),
                },
                parameters=[schedule_id],
            ),
        },
    }


def build_spec(settings: Settings) -> dict[str, Any]:
    flow_key = {
        "name": "key",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
    }
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": JOB_ID_PATTERN}}
    step_id = {
        "name": "step_id",
        "in": "path",
        "required": True,
        "description": "`<job_id>:<relation>`",
        "schema": {"type": "string", "pattern": f"^job_[0-9]{{10,16}}_[0-9a-f]{{16}}p[0-9]{{1,4}}:({'|'.join(RELATIONS)})$"},
    }
    paths: dict[str, Any] = {
        "/api/v1/jobs": {
            "post": _op(
                "Submit a job",
                {
                    "201": _json(_ref("JobAccepted"), "Accepted: queued in every chosen region"),
                    "200": _json(_ref("JobAccepted"), "A duplicate of an earlier job (same idempotent key): nothing new queued"),
                    **_errors(400, 413, 415, 422, *AUTHED),
                },
                body="Job",
                examples=JOB_EXAMPLES,
            )
        },
        "/api/v1/jobs/batch": {
            "post": _op(
                f"Submit up to {settings.max_batch_jobs} jobs in one request",
                {
                    "200": _json(_ref("JobBatchAnswer"), "One result per job, in order: accepted, a duplicate, or refused at acceptance"),
                    **_errors(400, 413, 415, 422, *AUTHED),
                },
                body="JobBatch",
                description=(
                    "Each job as `POST /api/v1/jobs` takes it. Every job is checked before any is accepted: one invalid job "
                    "refuses the whole batch (400 or 422, `error.field` `jobs[<i>].<field>`) and nothing is written. Then each "
                    "job is accepted as a single submission would be, with its own quota and idempotent key (a second job with "
                    "the same key in one batch is a duplicate of the first). A job refused at acceptance (`quota_exceeded`, "
                    "`overloaded`, `unavailable`) is an error in its place; the others stand. The body may be "
                    f"{settings.max_batch_body_bytes} bytes, each job at most {settings.max_body_bytes} (413 above)."
                ),
            )
        },
        "/api/v1/jobs/{job_id}": {
            "get": _op(
                "A job: state, attempts, result, webhooks",
                {"200": _json(_ref("JobView"), "The job"), **_errors(404, *AUTHED)},
                parameters=[job_id],
            ),
            "delete": _op(
                "Cancel a job that has not ended (and what is pending below it in its workflow): nothing is sent after the answer",
                {
                    "200": _json(_ref("JobCancelled"), "Cancelled"),
                    "202": _json(_ref("JobCancelled"), "An attempt is in flight: cancelled when it ends (after_attempt=true)"),
                    **_errors(400, 404, 409, *AUTHED),
                },
                parameters=[
                    job_id,
                    {
                        "name": "after_attempt",
                        "in": "query",
                        "required": False,
                        "description": "With an attempt in flight: cancel once it ends (its result kept), not 409 in_flight",
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                ],
            ),
        },
        "/api/v1/jobs/cancel": {
            "post": _op(
                "Cancel many jobs, by id (at most 1000) or by filter (a bulk action: more than 100 matches run in the background)",
                {
                    "200": _json(_ref("BulkCancelled"), "Each job's outcome"),
                    "202": _json(_ref("BulkCancelAction"), "A filter's action, running in the background: read its progress"),
                    **_errors(400, 413, 415, *AUTHED),
                },
                body="BulkCancel",
            )
        },
        "/api/v1/jobs/cancel/{action_id}": {
            "get": _op(
                "A bulk cancel's progress (any edge)",
                {"200": _json(_ref("BulkCancelAction"), "The action"), **_errors(404, *AUTHED)},
                parameters=[{"name": "action_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
            )
        },
        "/api/v1/jobs/{job_id}/events": {
            "get": _op(
                "The job's live events (server-sent events), starting with a snapshot",
                {
                    "200": _text("text/event-stream", "An event stream; ends when the job is final and its webhooks settled"),
                    **_errors(404, *AUTHED),
                },
                parameters=[job_id],
            )
        },
        "/api/v1/jobs/{job_id}/frugal-claims/{step_id}": {
            "post": _op(
                "Claim a FRUGAL step: exactly one claim succeeds",
                {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["status", "job_id", "step_id"],
                            "properties": {"status": {"const": "claimed"}, "job_id": {"type": "string"}, "step_id": {"type": "string"}},
                        },
                        "Claimed: run it",
                    ),
                    **_errors(400, 404, 409, *AUTHED),
                },
                parameters=[job_id, step_id],
            )
        },
        "/api/v1/flow-control/{key}": {
            "get": _op(
                "One of your flow-control keys: rate, parallelism, sends in flight, pause",
                {"200": _json(_ref("FlowControlKey"), "The key"), **_errors(400, 404, *AUTHED)},
                parameters=[flow_key],
            )
        },
        "/api/v1/flow-control/{key}/pause": {
            "post": _op(
                "Hold back every job of the key (until resumed, or for for_s seconds); they wait, nothing is lost",
                {"200": _json(_ref("FlowControlKey"), "Paused"), **_errors(400, 404, 413, 415, *AUTHED)},
                parameters=[flow_key],
            )
        },
        "/api/v1/flow-control/{key}/resume": {
            "post": _op(
                "End the key's pause (yours, or a target's Retry-After)",
                {"200": _json(_ref("FlowControlKey"), "Resumed"), **_errors(400, 404, *AUTHED)},
                parameters=[flow_key],
            )
        },
        "/api/v1/usage": {
            "get": _op("This month's usage, tier, cap and overage", {"200": _json(_ref("Usage"), "Usage"), **_errors(*AUTHED)})
        },
        "/api/v1/webhook-secrets": {
            "post": _op(
                "Set the webhook signing secrets (a POST without a secondary removes it)",
                {"200": _json(_ref("WebhookSecretsSaved"), "Saved; shown masked"), **_errors(400, 413, 415, *AUTHED)},
                body="WebhookSecretsIn",
            ),
            "get": _op("The webhook secrets, masked", {"200": _json(_ref("WebhookSecrets"), "Masked"), **_errors(404, *AUTHED)}),
            "delete": _op(
                "Delete the webhook secrets",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "message"],
                            "properties": {"status": {"const": "ok"}, "message": {"type": "string"}},
                        },
                        "Deleted (also when none was set)",
                    ),
                    **_errors(*AUTHED),
                },
            ),
        },
        "/api/v1/webhook-secrets/rotate": {
            "post": _op(
                "Rotate: the new secret becomes primary, the current primary secondary (in one step)",
                {"200": _json(_ref("WebhookSecretsSaved"), "Rotated; shown masked"), **_errors(400, 409, 413, 415, *AUTHED)},
                body="WebhookSecretsRotateIn",
            ),
        },
        "/api/v1/deliveries/dead": {
            "get": _op(
                "Dead-lettered webhooks, oldest first",
                {"200": _json(_ref("DeadLetters"), "Dead letters"), **_errors(400, *AUTHED)},
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
                    }
                ],
            )
        },
        "/api/v1/deliveries/dead/replay": {
            "post": _op(
                "Replay the dead letters a filter matches (job_ids, dead_after/dead_before ms, exclusive);"
                " more than 100: in the background",
                {
                    "200": _json(_ref("DeadReplay"), "Done: every match replayed"),
                    "202": _json(_ref("DeadReplay"), "Running in the background: read its progress"),
                    **_errors(400, 413, 415, *AUTHED),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "job_ids": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": {"type": "string", "minLength": 1, "maxLength": 64},
                                    },
                                    "dead_after": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
                                    "dead_before": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
                                },
                            }
                        }
                    },
                },
            )
        },
        "/api/v1/deliveries/dead/replay/{replay_id}": {
            "get": _op(
                "A bulk replay's progress",
                {"200": _json(_ref("DeadReplay"), "The replay"), **_errors(404, *AUTHED)},
                parameters=[{"name": "replay_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
            )
        },
        "/api/v1/deliveries/dead/{job_id}/replay": {
            "post": _op(
                "Queue a job's dead webhooks again, each with a fresh retry window",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["job_id", "replayed"],
                            "properties": {"job_id": {"type": "string"}, "replayed": {"type": "integer", "minimum": 0}},
                        },
                        "Queued again",
                    ),
                    **_errors(404, *AUTHED),
                },
                parameters=[job_id],
            )
        },
        "/api/v1/proxy": {
            "post": _op(
                "The published SDK's proxy envelope, dispatched to the routes above",
                {
                    "200": _json(_ref("ProxyAnswer"), "The target route's answer, whatever its status"),
                    **_errors(400, 404, 405, 413, 415, *AUTHED),
                },
                body="ProxyEnvelope",
            )
        },
        "/api/v1/regions": {"get": _op("Each region's state and live edges", {"200": _json(_ref("Regions"), "Regions")}, authed=False)},
        "/healthz": {"get": _op("Liveness, with the admission state", {"200": _json(_ref("Health"), "Alive")}, authed=False)},
        "/readyz": {
            "get": _op(
                "Readiness: Redis reachable and the job loop running",
                {"200": _json(_ref("Ready"), "Ready"), "503": _json(_ref("Ready"), "Not ready")},
                authed=False,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics", {"200": _text("text/plain", "Prometheus text format")}, authed=False)},
        PATH: {"get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")}, authed=False)},
    }
    search = _search_ops()
    paths["/api/v1/jobs"]["get"], paths["/api/v1/domains/{host}"] = search["list"], {"get": search["domain"]}
    paths.update(_schedule_paths())
    paths.update(console_paths())  # GET /console and its forms (edge/console/openapi.py)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "EZThrottle edge API",
            "version": "1",
            "description": 'Errors are `{"error": {"code", "message", "field"?}}` with the status of their code. '
            f"Request bodies are limited to {settings.max_body_bytes} bytes, a batch to {settings.max_batch_body_bytes} (413 above).",
        },
        "servers": [{"url": settings.advertised_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key: `Bearer ezt_live_...`"}},
            "schemas": _schemas(settings),
        },
    }


def route(settings: Settings) -> web.RouteDef:
    """``GET /openapi.json``, rendered once."""
    body = orjson.dumps(build_spec(settings))

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return web.get(PATH, openapi)

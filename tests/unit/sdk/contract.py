"""The wire contract as the SDK's tests know it, independent of the server's code."""

from __future__ import annotations

# Top-level job fields of ``POST /api/v1/jobs``; anything else is a 400.
JOB_FIELDS = frozenset(
    {
        "url",
        "method",
        "headers",
        "body",
        "metadata",
        "webhooks",
        "webhook_quorum",
        "regions",
        "region_policy",
        "execution_mode",
        "retry_policy",
        "fallback_job",
        "on_success",
        "on_failure",
        "on_failure_timeout_ms",
        "idempotent_key",
        "retry_at",
        "type",  # "frugal" on FRUGAL steps (never sent by the published SDK); the server accepts it
    }
)
# A fallback job's field besides those: what triggers it.
FALLBACK_FIELDS = frozenset({"trigger"})

"""Errors of the server.

Hierarchy (stdlib mix-ins in brackets)::

    EZThrottleServerError
    ├── ApiError                             an answer to a client: code, HTTP status, message
    ├── OutboundBlocked                      a target or webhook the outbound policy refuses
    ├── ConfigError [ValueError]             common/config.py: the configuration is unusable
    ├── InvalidCustomerId [ValueError]       common/apikeys.py: a customer id that is not allowed
    ├── SecretBoxError [ValueError]          common/secretbox.py: a sealed secret that cannot be opened here
    ├── ScriptError                          common/scripting.py: a Lua script or an include names no file
    ├── ClusterError [RuntimeError]          devcluster/cluster.py: ``make up-local`` cannot start the cluster
    └── PacingError                          pacing/__init__.py: the pacing package's root
        └── OverridesError [ValueError]      domains.yaml (or a domain on the command line) is unusable

API errors are data: every code has one HTTP status, in ``API_ERRORS``. They
go out as ``{"error": {"code": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

from typing import Any

API_ERRORS: dict[str, int] = {
    "invalid_json": 400,
    "invalid_request": 400,
    "invalid_field": 400,
    "unknown_field": 400,
    "missing_field": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "in_flight": 409,  # DELETE /api/v1/jobs/{id}: an attempt is under way (?after_attempt=true waits for it)
    "already_final": 409,  # DELETE /api/v1/jobs/{id}: the job has ended
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "outbound_blocked": 422,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "overloaded": 429,
    "too_many_bulk_actions": 429,  # common/bulk.py: the customer has EZT_BULK_MAX_RUNNING_PER_CUSTOMER running
    "internal_error": 500,
    "region_unavailable": 503,
    "unavailable": 503,
    "secrets_unavailable": 503,
}


class EZThrottleServerError(Exception):
    """Root of the server's exceptions."""


class ApiError(EZThrottleServerError):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        if code not in API_ERRORS and status is None:
            raise KeyError(f"unknown API error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.status = status if status is not None else API_ERRORS[code]

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class OutboundBlocked(EZThrottleServerError):
    """The outbound policy refuses this destination; nothing was sent.

    ``str()`` is what a customer may read (job attempts, webhook errors): it
    names the host and the kind of address, never an address a name resolved
    to. ``detail`` is the operators' version, with the address (logged where
    the refusal happens); it is ``str()`` when there is nothing more to say.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message

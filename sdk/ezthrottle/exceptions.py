"""Exceptions raised by the EZThrottle SDK.

Everything derives from one root, so ``except EZThrottleError`` catches all
of them; stdlib mix-ins let generic handlers work too::

    EZThrottleError                 root; .code, .status_code, .retry_at
    ├── AuthenticationError         401 / 403, or no API key configured
    ├── NotFoundError               404
    ├── ValidationError             400 / 413 / 415 / 422, and client-side checks
    │                               (also a builtins.ValueError)
    ├── RateLimitError              429; .retry_after_s, .retry_at (epoch ms)
    │   └── QuotaExceededError      429 with code "quota_exceeded"
    ├── ServerError                 5xx
    ├── ConnectionError             the server cannot be reached
    │                               (also a builtins.ConnectionError)
    ├── TimeoutError                no answer in time (also a builtins.TimeoutError)
    ├── WebhookVerificationError    a webhook signature does not verify
    └── ForwardToEZThrottle         raised by user code, caught by @auto_forward

``error_from_response`` turns a server error response into the right class.
"""

from __future__ import annotations

import builtins
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, Optional

__all__ = [
    "EZThrottleError",
    "AuthenticationError",
    "NotFoundError",
    "ValidationError",
    "RateLimitError",
    "QuotaExceededError",
    "ServerError",
    "ConnectionError",
    "TimeoutError",
    "WebhookVerificationError",
    "ForwardToEZThrottle",
    "error_from_response",
]

DEFAULT_FORWARD_CODES = (429, 500, 502, 503, 504)


class EZThrottleError(Exception):
    """Root of every SDK error.

    ``code`` is the server's machine-readable error code, ``status_code`` the
    HTTP status, ``retry_at`` an epoch timestamp in milliseconds after which a
    retry makes sense (all ``None`` when unknown).
    """

    def __init__(
        self,
        message: str,
        retry_at: Optional[int] = None,
        *,
        code: Optional[str] = None,
        status_code: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_at = retry_at
        self.code = code
        self.status_code = status_code


class AuthenticationError(EZThrottleError):
    """The API key is missing, unknown or not allowed to do this."""


class NotFoundError(EZThrottleError):
    """The job or resource does not exist (or belongs to another customer)."""


class ValidationError(EZThrottleError, ValueError):
    """The request is invalid, as found by the SDK or by the server."""


class RateLimitError(EZThrottleError):
    """The server refused the request for now; retry after ``retry_after_s``."""

    def __init__(
        self,
        message: str,
        retry_at: Optional[int] = None,
        *,
        code: Optional[str] = None,
        status_code: Optional[int] = 429,
        retry_after_s: Optional[float] = None,
    ) -> None:
        super().__init__(message, retry_at, code=code, status_code=status_code)
        self.retry_after_s = retry_after_s


class QuotaExceededError(RateLimitError):
    """The account's request quota is used up."""


class ServerError(EZThrottleError):
    """The server failed (HTTP 5xx)."""


class ConnectionError(EZThrottleError, builtins.ConnectionError):
    """The server (or, for direct calls, the target) could not be reached."""


class TimeoutError(EZThrottleError, builtins.TimeoutError):
    """No answer arrived within the timeout."""


class WebhookVerificationError(EZThrottleError):
    """A webhook's ``X-EZThrottle-Signature`` did not verify; ``reason`` says why."""

    def __init__(self, message: str, *, reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason


class ForwardToEZThrottle(EZThrottleError):
    """Raise from user code to hand a request over to EZThrottle.

    A function decorated with ``@auto_forward(client)`` catches it and submits
    the request it describes as a job.
    """

    def __init__(
        self,
        message: str = "Forwarding to EZThrottle",
        url: Optional[str] = None,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        idempotent_key: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        webhooks: Optional[list[dict[str, Any]]] = None,
        regions: Optional[list[str]] = None,
        fallback_on_error: Optional[list[int]] = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.method = method
        self.headers = headers or {}
        self.body = body
        self.idempotent_key = idempotent_key
        self.metadata = metadata or {}
        self.webhooks = webhooks or []
        self.regions = regions
        self.fallback_on_error = fallback_on_error or list(DEFAULT_FORWARD_CODES)


# HTTP status -> class, for statuses that have their own class.
_CLASS_BY_STATUS: dict[int, type[EZThrottleError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimitError,
}


def error_from_response(
    status_code: int,
    content: bytes,
    headers: Mapping[str, str],
    *,
    now_s: Optional[float] = None,
) -> EZThrottleError:
    """Build the exception for a server error response.

    ``content`` is the raw body, normally ``{"error": {"code", "message"}}``;
    anything else (a proxy's HTML page, say) still gives a useful message.
    ``headers`` must be case-insensitive (as httpx's are) for ``Retry-After``.
    """
    code, message = _parse_error_body(content)
    text = f"{message} (HTTP {status_code}" + (f", {code})" if code else ")")
    if status_code == 429:
        retry_after_s = parse_retry_after(headers.get("retry-after"), now_s=now_s)
        retry_at = None
        if retry_after_s is not None:
            now_ms = (time.time() if now_s is None else now_s) * 1000
            retry_at = int(now_ms + retry_after_s * 1000)
        limit_cls = QuotaExceededError if code == "quota_exceeded" else RateLimitError
        return limit_cls(text, retry_at, code=code, status_code=status_code, retry_after_s=retry_after_s)
    error_cls = _CLASS_BY_STATUS.get(status_code, ServerError if status_code >= 500 else EZThrottleError)
    return error_cls(text, code=code, status_code=status_code)


def parse_retry_after(value: Optional[str], *, now_s: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def _parse_error_body(content: bytes) -> tuple[Optional[str], str]:
    try:
        error = json.loads(content)["error"]
        return error.get("code"), str(error.get("message") or error.get("code") or "unknown error")
    except (ValueError, KeyError, TypeError, AttributeError):
        snippet = content[:200].decode("utf-8", "replace").strip()
        return None, snippet or "no error details in the response"

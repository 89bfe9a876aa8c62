"""The exception tree and the mapping of server error responses."""

from __future__ import annotations

import builtins
import json
from email.utils import formatdate

import pytest

import ezthrottle
from ezthrottle.exceptions import (
    AuthenticationError,
    ConnectionError,
    EZThrottleError,
    ForwardToEZThrottle,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TimeoutError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)

NOW_S = 1_767_225_600.0


def body(code: str, message: str = "details") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def test_published_constructor_still_works() -> None:
    error = EZThrottleError("Rate limited", 1_767_225_660_000)
    assert str(error) == "Rate limited"
    assert error.retry_at == 1_767_225_660_000
    assert error.code is None and error.status_code is None
    keyed = EZThrottleError("nope", code="bad", status_code=400)
    assert (keyed.code, keyed.status_code, keyed.retry_at) == ("bad", 400, None)


def test_stdlib_mixins() -> None:
    assert isinstance(ConnectionError("x"), builtins.ConnectionError)
    assert isinstance(TimeoutError("x"), builtins.TimeoutError)
    assert isinstance(ValidationError("x"), ValueError)
    assert str(ConnectionError("cannot reach")) == "cannot reach"
    with pytest.raises(OSError):
        raise ConnectionError("caught by a generic network handler")


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", ValidationError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", AuthenticationError),
        (404, "not_found", NotFoundError),
        (413, "payload_too_large", ValidationError),
        (415, "unsupported_media_type", ValidationError),
        (422, "unprocessable", ValidationError),
        (429, "rate_limited", RateLimitError),
        (429, "quota_exceeded", QuotaExceededError),
        (500, "internal", ServerError),
        (503, "unavailable", ServerError),
        (409, "conflict", EZThrottleError),
    ],
)
def test_status_and_code_pick_the_class(status: int, code: str, cls: type) -> None:
    error = error_from_response(status, body(code, "what happened"), {}, now_s=NOW_S)
    assert type(error) is cls
    assert (error.status_code, error.code) == (status, code)
    assert str(error) == f"what happened (HTTP {status}, {code})"


def test_quota_exceeded_is_a_rate_limit() -> None:
    error = error_from_response(429, body("quota_exceeded"), {"retry-after": "60"}, now_s=NOW_S)
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 60


def test_retry_after_seconds_give_retry_at_in_ms() -> None:
    error = error_from_response(429, body("rate_limited"), {"retry-after": "7"}, now_s=NOW_S)
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 7.0
    assert error.retry_at == int(NOW_S * 1000) + 7000


def test_retry_after_http_date() -> None:
    date = formatdate(NOW_S + 120, usegmt=True)
    assert parse_retry_after(date, now_s=NOW_S) == pytest.approx(120)
    assert parse_retry_after("soon", now_s=NOW_S) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def test_429_without_retry_after() -> None:
    error = error_from_response(429, body("rate_limited"), {}, now_s=NOW_S)
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s is None and error.retry_at is None


def test_body_that_is_not_the_error_envelope() -> None:
    error = error_from_response(502, b"<html>Bad Gateway</html>", {})
    assert isinstance(error, ServerError)
    assert str(error) == "<html>Bad Gateway</html> (HTTP 502)"
    assert "no error details" in str(error_from_response(500, b"", {}))
    assert str(error_from_response(400, b'{"error": {"code": "x"}}', {})) == "x (HTTP 400, x)"


def test_forward_to_ezthrottle_defaults_match_published() -> None:
    forward = ForwardToEZThrottle()
    assert str(forward) == "Forwarding to EZThrottle"
    assert forward.url is None and forward.method == "GET" and forward.body is None
    assert forward.headers == {} and forward.metadata == {} and forward.webhooks == []
    assert forward.regions is None and forward.idempotent_key is None
    assert forward.fallback_on_error == [429, 500, 502, 503, 504]
    assert isinstance(forward, EZThrottleError)
    positional = ForwardToEZThrottle("m", "https://a.example.com", "POST", {"A": "1"}, "b", "k", {"m": 1})
    assert (positional.url, positional.method, positional.idempotent_key) == (
        "https://a.example.com",
        "POST",
        "k",
    )


def test_every_exported_name_resolves() -> None:
    """``__all__`` names only what the package has, so ``import *`` works.

    That it keeps every name of the published 1.3.0 is checked against that
    package itself, in ``test_sdk_dropin_signatures.py``.
    """
    namespace: dict[str, object] = {}
    exec("from ezthrottle import *", namespace)  # AttributeError for a listed name that is missing
    assert set(ezthrottle.__all__) <= namespace.keys()
    assert [name for name in ezthrottle.__all__ if namespace[name] is None] == []
    for name in ["AsyncEZThrottle", "sign_webhook", "ConnectionError", "NotFoundError"]:
        assert name in ezthrottle.__all__

"""Webhook signatures: sign and verify ``X-EZThrottle-Signature``.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">``
keyed with the customer's webhook secret. Verify against the raw request
body, exactly as received, never against re-serialized JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Optional, Union

from .exceptions import WebhookVerificationError

__all__ = [
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE_S",
    "sign_webhook",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
    "try_verify_with_secrets",
    "WebhookVerificationError",
]

SIGNATURE_HEADER = "X-EZThrottle-Signature"
DEFAULT_TOLERANCE_S = 300

Payload = Union[bytes, str]
Secret = Union[bytes, str]


def _as_bytes(value: Union[bytes, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _signature(payload: Payload, secret: Secret, timestamp: int) -> str:
    message = f"{timestamp}.".encode("ascii") + _as_bytes(payload)
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign_webhook(payload: Payload, secret: Secret, timestamp: Optional[int] = None) -> str:
    """Return the ``X-EZThrottle-Signature`` value for ``payload``, signed now by default."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={_signature(payload, secret, ts)}"


def verify_webhook_signature(
    payload: Payload,
    signature_header: Optional[str],
    secret: Secret,
    tolerance: int = DEFAULT_TOLERANCE_S,
    *,
    now_s: Optional[float] = None,
) -> tuple[bool, str]:
    """Check a webhook's signature; return ``(verified, reason)``.

    ``reason`` is ``"valid"`` or one of ``no_signature_header``,
    ``missing_v1_signature``, ``timestamp_expired (diff=350s, tolerance=300s)``,
    ``signature_mismatch``, ``verification_error: {details}``. The timestamp
    must be within ``tolerance`` seconds of now (either side), which stops
    replays of old deliveries. Several ``v1`` entries are allowed; one must match.
    """
    if not signature_header:
        return False, "no_signature_header"
    try:
        timestamp_text = "0"
        candidates = []
        for part in signature_header.split(","):
            key, sep, value = part.strip().partition("=")
            if sep and key == "t":
                timestamp_text = value
            elif sep and key == "v1" and value:
                candidates.append(value)
        if not candidates:
            return False, "missing_v1_signature"
        try:
            timestamp = int(timestamp_text)
        except ValueError:
            return False, f"verification_error: invalid timestamp {timestamp_text!r}"
        diff = abs(int(time.time() if now_s is None else now_s) - timestamp)
        if diff > tolerance:
            return False, f"timestamp_expired (diff={diff}s, tolerance={tolerance}s)"
        expected = _signature(payload, secret, timestamp)
        # Check every candidate, so the time taken does not tell which matched.
        matches = [hmac.compare_digest(expected, c) for c in candidates]
    except (TypeError, ValueError, UnicodeError) as exc:
        return False, f"verification_error: {exc}"
    return (True, "valid") if any(matches) else (False, "signature_mismatch")


def verify_webhook_signature_strict(
    payload: Payload,
    signature_header: Optional[str],
    secret: Secret,
    tolerance: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Like ``verify_webhook_signature`` but raise ``WebhookVerificationError`` on failure."""
    verified, reason = verify_webhook_signature(payload, signature_header, secret, tolerance)
    if not verified:
        raise WebhookVerificationError(f"Webhook signature verification failed: {reason}", reason=reason)


def try_verify_with_secrets(
    payload: Payload,
    signature_header: Optional[str],
    primary_secret: Secret,
    secondary_secret: Optional[Secret] = None,
    tolerance: int = DEFAULT_TOLERANCE_S,
) -> tuple[bool, str]:
    """Verify with the primary secret, then the secondary one (during rotation).

    Returns ``(True, "valid_primary")``, ``(True, "valid_secondary")`` or
    ``(False, "both_secrets_failed (primary: <reason>)")``.
    """
    verified, reason = verify_webhook_signature(payload, signature_header, primary_secret, tolerance)
    if verified:
        return True, "valid_primary"
    if secondary_secret and verify_webhook_signature(payload, signature_header, secondary_secret, tolerance)[0]:
        return True, "valid_secondary"
    return False, f"both_secrets_failed (primary: {reason})"

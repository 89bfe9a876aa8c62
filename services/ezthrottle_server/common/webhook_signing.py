"""Webhook signatures: ``X-EZThrottle-Signature`` and the Standard Webhooks headers.

With a customer secret set, every delivery carries both:

``X-EZThrottle-Signature: t=<unix s>,v1=<hex>``
    ``hex`` is HMAC-SHA256 of ``"{t}.{raw body}"`` keyed with the UTF-8 bytes
    of the *primary* secret, exactly what the SDK README documents and what
    the published ``ezthrottle`` package's ``verify_webhook_signature``
    checks (one ``v1`` only: that package reads a single one). During a
    rotation receivers try both secrets (``try_verify_with_secrets``).

``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (Standard Webhooks)
    ``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{t}.{body}">``,
    one space-separated entry per secret (primary first, then secondary), as
    the standard does for rotation. The key is the secret's UTF-8 bytes, so a
    receiver using the ``standardwebhooks`` library passes
    ``"whsec_" + base64(secret)`` (or the bytes ``secret.encode()``). A secret
    that already has the standard's form, ``whsec_<base64>``, is used as the
    standard means it: keyed with the base64-decoded bytes, so the receiver
    passes the secret unchanged. (Its ``X-EZThrottle-Signature`` still uses
    the UTF-8 bytes of the whole string, as the SDK does.)
    ``webhook-id`` is the same for every retry of one webhook of one job, so
    receivers can drop duplicates (delivery is at least once).

Without a secret a delivery goes out unsigned (``webhook-id`` and
``webhook-timestamp`` are still sent). The body is signed as sent: receivers
must verify the raw bytes, never re-serialised JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

SIGNATURE_HEADER = "X-EZThrottle-Signature"
STANDARD_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookSecrets:
    """A customer's secrets. Never shown whole: ``repr`` prints stars."""

    primary: str
    secondary: str | None = None

    def __repr__(self) -> str:
        return f"WebhookSecrets(primary='****', secondary={'****' if self.secondary else None!r})"

    __str__ = __repr__


def ezthrottle_signature(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-EZThrottle-Signature`` value of ``body`` at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def standard_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature for ``secret`` (see the module doc)."""
    if secret.startswith(STANDARD_SECRET_PREFIX):
        try:
            # Decoded the way the standardwebhooks library decodes it.
            key = base64.b64decode(secret[len(STANDARD_SECRET_PREFIX) :] + "==")
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def standard_signature(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One ``v1,<base64>`` entry of ``webhook-signature``."""
    mac = hmac.new(standard_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def message_id(job_id: str, hook: int) -> str:
    """``webhook-id``: stable across retries of one webhook of one job."""
    return f"msg_{job_id}_{hook}"


def signed_headers(body: bytes, msg_id: str, timestamp: int, secrets: WebhookSecrets | None) -> dict[str, str]:
    """The signature headers of one delivery."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secrets is None:
        return headers
    headers[SIGNATURE_HEADER] = ezthrottle_signature(body, secrets.primary, timestamp)
    keys = [secrets.primary] + ([secrets.secondary] if secrets.secondary else [])
    headers["webhook-signature"] = " ".join(standard_signature(msg_id, timestamp, body, k) for k in keys)
    return headers

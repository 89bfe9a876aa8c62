"""Webhook signatures: moved to ``common/webhook_signing.py`` (the edge signs first attempts too); kept for imports."""

from ..common.webhook_signing import (
    SIGNATURE_HEADER,
    STANDARD_SECRET_PREFIX,
    WebhookSecrets,
    ezthrottle_signature,
    message_id,
    signed_headers,
    standard_key,
    standard_signature,
)

__all__ = [
    "SIGNATURE_HEADER",
    "STANDARD_SECRET_PREFIX",
    "WebhookSecrets",
    "ezthrottle_signature",
    "message_id",
    "signed_headers",
    "standard_key",
    "standard_signature",
]

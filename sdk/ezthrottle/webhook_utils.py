"""Old import path (``ezthrottle.webhook_utils``) of the 1.x SDK; use ``ezthrottle.webhooks``."""

from .webhooks import (
    WebhookVerificationError,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)

__all__ = [
    "WebhookVerificationError",
    "try_verify_with_secrets",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
]

"""One webhook POST: moved to ``common/webhook_sender.py`` (the edge sends first attempts too); kept for imports."""

from ..common.webhook_sender import USER_AGENT, SendResult, WebhookSender

__all__ = ["USER_AGENT", "SendResult", "WebhookSender"]

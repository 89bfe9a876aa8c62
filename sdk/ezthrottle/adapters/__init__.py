"""Glue between ``WebhookHandler`` and web frameworks.

Import the one you use; each imports its framework, and nothing in
``ezthrottle`` imports these modules, so the SDK never pulls a framework in::

    from ezthrottle.adapters.aiohttp import aiohttp_webhook_view   # aiohttp
    from ezthrottle.adapters.fastapi import fastapi_webhook_route  # FastAPI / Starlette
    from ezthrottle.adapters.flask import flask_webhook_view       # Flask

Each answers 200 with ``WebhookResult.response_body()``, 401 when the
signature does not verify, 400 for a body that is not a webhook, and calls
``on_result(result)`` (awaited if it is a coroutine function, in the async
adapters) before answering, for your own processing of the job's outcome.
"""

from __future__ import annotations

from typing import Any, Optional

from ..exceptions import ValidationError, WebhookVerificationError

__all__ = ["error_answer"]


def error_answer(exc: Exception) -> Optional[tuple[int, dict[str, Any]]]:
    """The HTTP answer for a handler error, or None if it is not the sender's fault."""
    if isinstance(exc, WebhookVerificationError):
        return 401, {"error": {"code": "invalid_signature", "message": str(exc)}}
    if isinstance(exc, ValidationError):
        return 400, {"error": {"code": "invalid_webhook", "message": str(exc)}}
    return None

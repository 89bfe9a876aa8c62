"""Flask adapter::

    app.add_url_rule("/webhook", view_func=flask_webhook_view(handler), methods=["POST"])

Needs a sync ``EZThrottle`` client.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from flask import request

from ..workflow import WebhookHandler, WebhookResult
from . import error_answer

__all__ = ["flask_webhook_view"]


def flask_webhook_view(
    handler: WebhookHandler,
    on_result: Optional[Callable[[WebhookResult], Any]] = None,
    *,
    endpoint: str = "ezthrottle_webhook",
) -> Callable[[], tuple[dict[str, Any], int]]:
    if handler.is_async:
        raise TypeError("the Flask adapter needs a sync EZThrottle client")

    def view() -> tuple[dict[str, Any], int]:
        try:
            result = handler.handle(request.get_data(), dict(request.headers))
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                raise
            return answer[1], answer[0]
        if on_result is not None:
            on_result(result)
        return result.response_body(), 200

    view.__name__ = endpoint  # Flask names routes after their view function
    return view

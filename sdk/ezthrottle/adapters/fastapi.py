"""FastAPI / Starlette adapter::

    app.add_api_route("/webhook", fastapi_webhook_route(handler), methods=["POST"])

With a sync ``EZThrottle`` client the handler runs in Starlette's thread pool.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..workflow import WebhookHandler, WebhookResult
from . import error_answer

__all__ = ["fastapi_webhook_route"]


def fastapi_webhook_route(
    handler: WebhookHandler, on_result: Optional[Callable[[WebhookResult], Any]] = None
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers)
        try:
            if handler.is_async:
                result = await handler.handle_async(body, headers)
            else:
                result = await run_in_threadpool(handler.handle, body, headers)
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                raise
            return JSONResponse(answer[1], status_code=answer[0])
        if on_result is not None:
            done = on_result(result)
            if inspect.isawaitable(done):
                await done
        return JSONResponse(result.response_body())

    return webhook

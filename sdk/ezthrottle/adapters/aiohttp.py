"""aiohttp adapter: ``app.router.add_post("/webhook", aiohttp_webhook_view(handler))``.

With a sync ``EZThrottle`` client the handler runs in the loop's default
executor, so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from aiohttp import web

from ..workflow import WebhookHandler, WebhookResult
from . import error_answer

__all__ = ["aiohttp_webhook_view"]


def aiohttp_webhook_view(
    handler: WebhookHandler, on_result: Optional[Callable[[WebhookResult], Any]] = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def view(request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            if handler.is_async:
                result = await handler.handle_async(body, headers)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, functools.partial(handler.handle, body, headers))
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                raise
            return web.json_response(answer[1], status=answer[0])
        if on_result is not None:
            done = on_result(result)
            if inspect.isawaitable(done):
                await done
        return web.json_response(result.response_body())

    return view

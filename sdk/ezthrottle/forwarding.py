"""``@auto_forward``: hand failed requests in existing code over to EZThrottle."""

from __future__ import annotations

import functools
import inspect
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

import httpx

from ._payload import check_status_codes
from .exceptions import ForwardToEZThrottle, ValidationError

__all__ = ["auto_forward"]

F = TypeVar("F", bound=Callable[..., Any])

# Headers that describe one connection, not the request: never forwarded
# (the server refuses most of them in a job).
_CONNECTION_HEADERS = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "transfer-encoding",
        "accept-encoding", "upgrade", "te", "trailer",
    }
)  # fmt: skip


def auto_forward(client: Any, fallback_on_error: Optional[Sequence[int]] = None) -> Callable[[F], F]:
    """Decorate a function so that the requests it gives up on become jobs.

    A ``ForwardToEZThrottle`` raised by the function is submitted through
    ``client`` (with a fresh uuid4 ``idempotent_key`` if it has none) and the
    submission result is returned instead. A network error from requests or
    httpx (the connection failed or timed out) is forwarded too, rebuilt from
    the request that failed (url, method, headers, body). With
    ``fallback_on_error``, so is an HTTP error from ``raise_for_status()``
    (requests or httpx) whose status is listed. A rebuilt job gets a fresh
    uuid4 key: the same call failing twice makes two jobs, as the two calls
    would have been two requests.

    Works on sync and async functions; an ``AsyncEZThrottle`` client needs an
    async function.
    """
    codes = check_status_codes(list(fallback_on_error), "fallback_on_error") if fallback_on_error else []
    client_is_async = inspect.iscoroutinefunction(client.submit_job)

    def decorator(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                except Exception as exc:
                    job = _job_to_forward(exc, codes)
                    if job is None:
                        raise
                result = client.submit_job(**job)
                return await result if client_is_async else result

            return async_wrapper  # type: ignore[return-value]

        if client_is_async:
            raise TypeError(f"@auto_forward with an async client needs an async function, not {func.__name__}")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                job = _job_to_forward(exc, codes)
                if job is None:
                    raise
            return client.submit_job(**job)

        return wrapper  # type: ignore[return-value]

    return decorator


def _job_to_forward(exc: Exception, codes: Sequence[int]) -> Optional[dict[str, Any]]:
    """The ``submit_job`` arguments for an exception, or None to let it propagate."""
    if isinstance(exc, ForwardToEZThrottle):
        if not exc.url:
            raise ValidationError("ForwardToEZThrottle needs url=... to be forwarded") from exc
        return {
            "url": exc.url,
            "method": exc.method,
            "headers": exc.headers or None,
            "body": exc.body,
            "metadata": exc.metadata or None,
            "webhooks": exc.webhooks or None,
            "regions": exc.regions,
            "idempotent_key": exc.idempotent_key or str(uuid.uuid4()),
        }
    if not _is_network_error(exc):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if not codes or status not in codes:
            return None
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when unset
        return None
    return _job_from_request(request) if request is not None else None


def _is_network_error(exc: Exception) -> bool:
    """A connection that failed or timed out, in httpx or requests (if it is loaded)."""
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    requests = sys.modules.get("requests.exceptions")  # never imported here: only if in use
    if requests is None:
        return False
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _job_from_request(request: Any) -> Optional[dict[str, Any]]:
    """Rebuild a job from a requests ``PreparedRequest`` or an ``httpx.Request``."""
    try:
        body = request.content if hasattr(request, "content") else request.body
    except Exception:
        return None
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            return None  # a binary body cannot travel in a job payload
    if body is not None and not isinstance(body, str):
        return None  # a streamed or file body
    headers = {str(name): str(value) for name, value in request.headers.items() if str(name).lower() not in _CONNECTION_HEADERS}
    return {
        "url": str(request.url),
        "method": request.method,
        "headers": headers or None,
        "body": body or None,
        "idempotent_key": str(uuid.uuid4()),
    }

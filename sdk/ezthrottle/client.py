"""Clients for the EZThrottle API: ``EZThrottle`` (sync) and ``AsyncEZThrottle``.

As in httpx, ``BaseClient`` holds everything without I/O (settings, request
building, response and error mapping); the two clients add only the sending.

Every API call is safe to repeat, so a call that fails to connect is retried
(at most ``MAX_RETRIES`` times, with a short backoff): job submissions are
deduplicated by the server (by ``idempotent_key``, custom or UNIQUE, or by a
hash of the request under HASH), so a repeat answers ``"duplicate"`` with the
first job's id; GET and DELETE are idempotent, and setting webhook secrets
sets the same value again. Direct calls (``request()``) are never retried.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import time
import warnings
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union
from urllib.parse import quote

import httpx

from ._payload import build_job_payload, check_url
from ._version import __version__
from .exceptions import (
    AuthenticationError,
    ConnectionError,
    EZThrottleError,
    NotFoundError,
    TimeoutError,
    ValidationError,
    error_from_response,
)

__all__ = ["BaseClient", "EZThrottle", "AsyncEZThrottle", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "http://127.0.0.1:8701"
API_KEY_ENV = "EZTHROTTLE_API_KEY"
BASE_URL_ENV = "EZTHROTTLE_URL"
USER_AGENT = f"ezthrottle-python/{__version__}"
MAX_RETRIES = 2
RETRY_BACKOFF_S = 0.1  # before retry n: RETRY_BACKOFF_S * 2**n, with jitter
MIN_SECRET_CHARS = 16
_JOBS = "/api/v1/jobs"
_SECRETS = "/api/v1/webhook-secrets"
# Connection failures: the request cannot have been processed, or is safe
# to repeat anyway. A read timeout is not retried: the server may be slow.
_RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)

T = TypeVar("T")


@dataclass(frozen=True)
class _ApiCall:
    """One API request, built without I/O."""

    method: str
    path: str
    json: Optional[dict[str, Any]] = None
    not_found: Optional[str] = None  # message for a 404, when it has a clear meaning


class BaseClient:
    """Settings and the I/O-free half of both clients."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        timeout_s: float = 30,
        tracktags_url: Optional[str] = None,
        ezthrottle_url: Optional[str] = None,
        webhook_server: Any = None,
        start_webhook_server: bool = False,
        webhook_port: int = 5000,
    ) -> None:
        """Configure the client.

        ``api_key`` defaults to ``$EZTHROTTLE_API_KEY``; ``base_url`` to
        ``$EZTHROTTLE_URL``, then ``http://127.0.0.1:8701``.

        The other keywords come from the hosted SDK 1.3.0 and are accepted so
        that old code still constructs: ``ezthrottle_url`` serves as the base
        URL when ``base_url`` is not given; ``tracktags_url`` (a proxy we do
        not need) and the embedded webhook server options are ignored, with a
        ``DeprecationWarning``.
        """
        legacy = {
            "tracktags_url": tracktags_url is not None,
            "webhook_server": webhook_server is not None,
            "start_webhook_server": bool(start_webhook_server),
            "webhook_port": webhook_port != 5000,
        }
        ignored = [name for name, given in legacy.items() if given]
        if ignored:
            warnings.warn(
                f"EZThrottle(): {', '.join(ignored)} ignored; this SDK talks to the "
                "EZThrottle server directly and has no embedded webhook server",
                DeprecationWarning,
                stacklevel=2,
            )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise AuthenticationError(
                f"no API key: pass EZThrottle(api_key=...) or set ${API_KEY_ENV}"
            )
        url = base_url or ezthrottle_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValidationError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        self._api_key = key
        self.base_url = check_url(url, "base_url").rstrip("/")
        self.timeout_s = float(timeout_s)
        self._http = self._open_pool()

    def _open_pool(self) -> Any:
        """The httpx client (sync or async) that sends everything."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} api_key={self._api_key[:4]}****>"

    # -- request building ------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        # Sent on API calls only, never on direct calls to third-party targets.
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _submit_call(payload: dict[str, Any]) -> _ApiCall:
        return _ApiCall("POST", _JOBS, json=payload)

    @staticmethod
    def _get_job_call(job_id: str) -> _ApiCall:
        if not isinstance(job_id, str) or not job_id:
            raise ValidationError(f"job_id must be a non-empty string, got {job_id!r}")
        return _ApiCall("GET", f"{_JOBS}/{quote(job_id, safe='')}", not_found=f"no job {job_id!r}")

    @staticmethod
    def _create_secret_call(primary_secret: str, secondary_secret: Optional[str]) -> _ApiCall:
        payload = {"primary_secret": _check_secret(primary_secret, "primary_secret")}
        if secondary_secret:
            payload["secondary_secret"] = _check_secret(secondary_secret, "secondary_secret")
        return _ApiCall("POST", _SECRETS, json=payload)

    @staticmethod
    def _secret_call(method: str) -> _ApiCall:
        return _ApiCall(
            method,
            _SECRETS,
            not_found="No webhook secrets configured. Call create_webhook_secret() first.",
        )

    @staticmethod
    def _rotation_secondary(current: Optional[Mapping[str, Any]]) -> Optional[str]:
        """The old primary secret to keep as secondary, if the server revealed it."""
        old = (current or {}).get("primary_secret")
        if not old:
            return None
        if "****" in old:
            warnings.warn(
                "rotate_webhook_secret(): the server masks the current secret, so it cannot "
                "stay valid as secondary; pass current_secret=... for a rotation without "
                "signature failures",
                UserWarning,
                stacklevel=3,
            )
            return None
        return str(old)

    # -- response handling -----------------------------------------------------

    @staticmethod
    def _result(call: _ApiCall, response: httpx.Response) -> dict[str, Any]:
        """The JSON body of a 2xx answer, or the matching exception."""
        if response.is_success:
            if not response.content:
                return {}
            try:
                data: dict[str, Any] = response.json()
            except ValueError:
                raise EZThrottleError(
                    f"{call.method} {call.path}: the server answered HTTP "
                    f"{response.status_code} with a body that is not JSON",
                    status_code=response.status_code,
                ) from None
            return data
        error = error_from_response(response.status_code, response.content, response.headers)
        if isinstance(error, NotFoundError) and call.not_found:
            error = NotFoundError(f"{call.not_found} (HTTP 404)", code=error.code, status_code=404)
        raise error

    @staticmethod
    def _transport_error(exc: httpx.RequestError, target: str) -> EZThrottleError:
        if isinstance(exc, httpx.TimeoutException):
            return TimeoutError(f"no answer from {target} in time: {exc!r}")
        return ConnectionError(f"cannot reach {target}: {exc!r}")

    @staticmethod
    def _retry_delays_s() -> list[float]:
        """Sleep before each retry: exponential backoff, +-50% jitter."""
        return [RETRY_BACKOFF_S * 2**n * random.uniform(0.5, 1.5) for n in range(MAX_RETRIES)]


class EZThrottle(BaseClient):
    """Sync client. Use as a context manager, or call ``close()``."""

    _http: httpx.Client

    def _open_pool(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout_s, headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> EZThrottle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, call: _ApiCall) -> dict[str, Any]:
        url = self._url(call.path)
        for delay_s in [*self._retry_delays_s(), None]:
            try:
                response = self._http.request(
                    call.method, url, json=call.json, headers=self._auth_headers()
                )
            except _RETRYABLE:
                if delay_s is None:
                    raise
                time.sleep(delay_s)
                continue
            return self._result(call, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _api(self, call: _ApiCall) -> dict[str, Any]:
        try:
            return self._call(call)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, self.base_url) from exc

    def submit_job(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        webhooks: Optional[list[dict[str, Any]]] = None,
        webhook_quorum: int = 1,
        regions: Optional[list[str]] = None,
        region_policy: str = "fallback",
        execution_mode: str = "race",
        retry_policy: Optional[dict[str, Any]] = None,
        fallback_job: Optional[dict[str, Any]] = None,
        on_success: Optional[dict[str, Any]] = None,
        on_failure: Optional[dict[str, Any]] = None,
        on_failure_timeout_ms: Optional[int] = None,
        idempotent_key: Optional[str] = None,
        retry_at: Optional[int] = None,
    ) -> dict[str, Any]:
        """Submit a job; return ``{"job_id", "status", "idempotent_key"}``.

        ``status`` is ``"queued"``, or ``"duplicate"`` (with the first job's
        id) when a job with the same idempotent key exists.
        """
        payload = build_job_payload(
            url,
            method,
            headers,
            body,
            metadata,
            webhooks,
            webhook_quorum,
            regions,
            region_policy,
            execution_mode,
            retry_policy,
            fallback_job,
            on_success,
            on_failure,
            on_failure_timeout_ms,
            idempotent_key,
            retry_at,
        )
        return self._api(self._submit_call(payload))

    def get_job(self, job_id: str) -> dict[str, Any]:
        """A job's state: ``status``, ``attempts``, ``result`` and more."""
        return self._api(self._get_job_call(job_id))

    def request(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        *,
        timeout_s: Optional[float] = None,
    ) -> httpx.Response:
        """Send a request straight to ``url`` (not through EZThrottle), without the API key."""
        try:
            return self._http.request(
                method.upper(),
                url,
                headers=headers,
                content=body,
                timeout=timeout_s or self.timeout_s,
                follow_redirects=True,
            )
        except httpx.RequestError as exc:
            raise self._transport_error(exc, url) from exc

    def queue_request(
        self,
        url: str,
        webhook_url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        retry_at: Optional[int] = None,
    ) -> dict[str, Any]:
        """Deprecated: use ``submit_job(webhooks=[{"url": webhook_url}])`` or ``Step``."""
        _warn_queue_request()
        return self.submit_job(
            url, method, headers, body, metadata, _legacy_webhooks(webhook_url), retry_at=retry_at
        )

    def forward_or_fallback(
        self,
        fallback: Callable[[], T],
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        **job: Any,
    ) -> Union[dict[str, Any], T]:
        """Submit a job, or return ``fallback()`` if EZThrottle cannot be reached."""
        try:
            return self.submit_job(url, method, headers, body, **job)
        except (ConnectionError, TimeoutError):
            return fallback()

    def create_webhook_secret(
        self, primary_secret: str, secondary_secret: Optional[str] = None
    ) -> dict[str, Any]:
        """Set the secret(s) webhooks are signed with (16+ characters each)."""
        return self._api(self._create_secret_call(primary_secret, secondary_secret))

    def get_webhook_secret(self) -> dict[str, Any]:
        """The secrets, masked; ``NotFoundError`` if none are set."""
        return self._api(self._secret_call("GET"))

    def delete_webhook_secret(self) -> dict[str, Any]:
        """Remove the secrets: webhooks go out unsigned."""
        return self._api(self._secret_call("DELETE"))

    def rotate_webhook_secret(
        self, new_secret: str, *, current_secret: Optional[str] = None
    ) -> dict[str, Any]:
        """Make ``new_secret`` primary and keep the current one valid as secondary.

        The server masks secrets on read, so pass ``current_secret`` to keep it;
        without it the current secret stops verifying at once (with a warning).
        """
        _check_secret(new_secret, "new_secret")
        if current_secret is None:
            try:
                current: Optional[dict[str, Any]] = self.get_webhook_secret()
            except NotFoundError:
                current = None
            current_secret = self._rotation_secondary(current)
        return self.create_webhook_secret(new_secret, current_secret)


class AsyncEZThrottle(BaseClient):
    """Async client with the same API; use ``async with`` or ``await aclose()``."""

    _http: httpx.AsyncClient

    def _open_pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout_s, headers={"User-Agent": USER_AGENT})

    async def __aenter__(self) -> AsyncEZThrottle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    close = aclose

    async def _call(self, call: _ApiCall) -> dict[str, Any]:
        url = self._url(call.path)
        for delay_s in [*self._retry_delays_s(), None]:
            try:
                response = await self._http.request(
                    call.method, url, json=call.json, headers=self._auth_headers()
                )
            except _RETRYABLE:
                if delay_s is None:
                    raise
                await asyncio.sleep(delay_s)
                continue
            return self._result(call, response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _api(self, call: _ApiCall) -> dict[str, Any]:
        try:
            return await self._call(call)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, self.base_url) from exc

    async def submit_job(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        webhooks: Optional[list[dict[str, Any]]] = None,
        webhook_quorum: int = 1,
        regions: Optional[list[str]] = None,
        region_policy: str = "fallback",
        execution_mode: str = "race",
        retry_policy: Optional[dict[str, Any]] = None,
        fallback_job: Optional[dict[str, Any]] = None,
        on_success: Optional[dict[str, Any]] = None,
        on_failure: Optional[dict[str, Any]] = None,
        on_failure_timeout_ms: Optional[int] = None,
        idempotent_key: Optional[str] = None,
        retry_at: Optional[int] = None,
    ) -> dict[str, Any]:
        """Submit a job; see ``EZThrottle.submit_job``."""
        payload = build_job_payload(
            url,
            method,
            headers,
            body,
            metadata,
            webhooks,
            webhook_quorum,
            regions,
            region_policy,
            execution_mode,
            retry_policy,
            fallback_job,
            on_success,
            on_failure,
            on_failure_timeout_ms,
            idempotent_key,
            retry_at,
        )
        return await self._api(self._submit_call(payload))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """A job's state; see ``EZThrottle.get_job``."""
        return await self._api(self._get_job_call(job_id))

    async def request(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        *,
        timeout_s: Optional[float] = None,
    ) -> httpx.Response:
        """Send a request straight to ``url`` (not through EZThrottle), without the API key."""
        try:
            return await self._http.request(
                method.upper(),
                url,
                headers=headers,
                content=body,
                timeout=timeout_s or self.timeout_s,
                follow_redirects=True,
            )
        except httpx.RequestError as exc:
            raise self._transport_error(exc, url) from exc

    async def queue_request(
        self,
        url: str,
        webhook_url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        retry_at: Optional[int] = None,
    ) -> dict[str, Any]:
        """Deprecated: use ``submit_job(webhooks=[{"url": webhook_url}])`` or ``Step``."""
        _warn_queue_request()
        return await self.submit_job(
            url, method, headers, body, metadata, _legacy_webhooks(webhook_url), retry_at=retry_at
        )

    async def forward_or_fallback(
        self,
        fallback: Callable[[], Union[T, Awaitable[T]]],
        url: str,
        method: str = "GET",
        headers: Optional[dict[str, str]] = None,
        body: Optional[str] = None,
        **job: Any,
    ) -> Union[dict[str, Any], T]:
        """Submit a job, or return ``fallback()`` (awaited if needed) if EZThrottle is down."""
        try:
            return await self.submit_job(url, method, headers, body, **job)
        except (ConnectionError, TimeoutError):
            result = fallback()
            return await result if inspect.isawaitable(result) else result

    async def create_webhook_secret(
        self, primary_secret: str, secondary_secret: Optional[str] = None
    ) -> dict[str, Any]:
        """Set the secret(s) webhooks are signed with (16+ characters each)."""
        return await self._api(self._create_secret_call(primary_secret, secondary_secret))

    async def get_webhook_secret(self) -> dict[str, Any]:
        """The secrets, masked; ``NotFoundError`` if none are set."""
        return await self._api(self._secret_call("GET"))

    async def delete_webhook_secret(self) -> dict[str, Any]:
        """Remove the secrets: webhooks go out unsigned."""
        return await self._api(self._secret_call("DELETE"))

    async def rotate_webhook_secret(
        self, new_secret: str, *, current_secret: Optional[str] = None
    ) -> dict[str, Any]:
        """See ``EZThrottle.rotate_webhook_secret``."""
        _check_secret(new_secret, "new_secret")
        if current_secret is None:
            try:
                current: Optional[dict[str, Any]] = await self.get_webhook_secret()
            except NotFoundError:
                current = None
            current_secret = self._rotation_secondary(current)
        return await self.create_webhook_secret(new_secret, current_secret)


def _check_secret(secret: object, field: str) -> str:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise ValidationError(f"{field} must be at least {MIN_SECRET_CHARS} characters")
    return secret


def _legacy_webhooks(webhook_url: Optional[str]) -> Optional[list[dict[str, Any]]]:
    return [{"url": webhook_url, "has_quorum_vote": True}] if webhook_url else None


def _warn_queue_request() -> None:
    warnings.warn(
        "queue_request() is deprecated; use submit_job(webhooks=[...]) or the Step builder",
        DeprecationWarning,
        stacklevel=3,
    )

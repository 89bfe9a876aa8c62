"""AsyncEZThrottle behaves like EZThrottle, against the same loopback server."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httpx
import pytest

from ezthrottle import (
    AsyncEZThrottle,
    AuthenticationError,
    ConnectionError,
    EZThrottle,
    NotFoundError,
    RateLimitError,
    Step,
    TimeoutError,
)

pytestmark = pytest.mark.timeout(30)

TARGET = "https://api.example.com/v1/charges"


def test_same_public_api_as_the_sync_client() -> None:
    def public(cls: type) -> dict[str, list[tuple[str, Any, Any]]]:
        return {
            name: [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
            for name, member in vars(cls).items()
            if not name.startswith("_") and callable(member)
        }

    sync_api, async_api = public(EZThrottle), public(AsyncEZThrottle)
    assert set(sync_api) <= set(async_api)
    for name, parameters in sync_api.items():
        assert async_api[name] == parameters, name
        if name == "list_jobs":  # an async iterator, not a coroutine
            assert "AsyncIterator" in str(inspect.signature(AsyncEZThrottle.list_jobs).return_annotation)
        elif name != "close":
            assert inspect.iscoroutinefunction(getattr(AsyncEZThrottle, name)), name


@pytest.mark.asyncio
async def test_submit_and_duplicate(async_client: AsyncEZThrottle, api: Any) -> None:
    first = await async_client.submit_job(TARGET, "post", body="b", idempotent_key="order-1")
    again = await async_client.submit_job(TARGET, "post", body="b", idempotent_key="order-1")
    assert first == {"job_id": "job_1", "status": "queued", "idempotent_key": "order-1"}
    assert again["status"] == "duplicate" and again["job_id"] == "job_1"
    request = api.api_requests()[0]
    assert request.headers["authorization"] == f"Bearer {api.api_key}"
    assert request.headers["user-agent"].startswith("ezthrottle-python/")
    assert request.json == {
        "url": TARGET,
        "method": "POST",
        "body": "b",
        "idempotent_key": "order-1",
    }


@pytest.mark.asyncio
async def test_concurrent_submissions(async_client: AsyncEZThrottle) -> None:
    results = await asyncio.gather(*(async_client.submit_job(TARGET, idempotent_key=f"order-{i}") for i in range(10)))
    assert len({r["job_id"] for r in results}) == 10


@pytest.mark.asyncio
async def test_errors_map_like_the_sync_client(api: Any, async_client: AsyncEZThrottle) -> None:
    async with AsyncEZThrottle("ezt_wrong_key", api.url) as wrong:
        with pytest.raises(AuthenticationError):
            await wrong.submit_job(TARGET)
    api.script(api.error(429, "rate_limited", headers={"Retry-After": "2"}))
    with pytest.raises(RateLimitError) as info:
        await async_client.submit_job(TARGET)
    assert info.value.retry_after_s == 2 and info.value.retry_at is not None
    with pytest.raises(NotFoundError):
        await async_client.get_job("job_404")


@pytest.mark.asyncio
async def test_network_errors(api: Any, closed_port_url: str) -> None:
    async with AsyncEZThrottle("k", closed_port_url) as down:
        with pytest.raises(ConnectionError) as info:
            await down.submit_job(TARGET)
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert await down.forward_or_fallback(_async_fallback, TARGET) == "direct"
        assert await down.forward_or_fallback(lambda: "sync direct", TARGET) == "sync direct"
    api.script(api.slow(0.5))
    async with AsyncEZThrottle(api.api_key, api.url, timeout_s=0.1) as slow:
        with pytest.raises(TimeoutError):
            await slow.get_job("job_1")


async def _async_fallback() -> str:
    return "direct"


@pytest.mark.asyncio
async def test_dropped_connection_is_retried(async_client: AsyncEZThrottle, api: Any) -> None:
    api.script(api.drop())
    assert (await async_client.submit_job(TARGET))["status"] == "queued"
    assert [r.dropped for r in api.api_requests()] == [True, False]


@pytest.mark.asyncio
async def test_get_job_secrets_and_direct_request(async_client: AsyncEZThrottle, api: Any) -> None:
    job_id = (await async_client.submit_job(TARGET))["job_id"]
    assert (await async_client.get_job(job_id))["status"] == "queued"
    await async_client.create_webhook_secret("primary_secret_0123456789")
    assert (await async_client.get_webhook_secret())["has_secondary"] is False
    await async_client.rotate_webhook_secret("second_secret_0123456789", current_secret="primary_secret_0123456789")
    assert (await async_client.get_webhook_secret())["has_secondary"] is True
    await async_client.delete_webhook_secret()
    with pytest.raises(NotFoundError):
        await async_client.get_webhook_secret()
    response = await async_client.request(f"{api.url}/target/status/202")
    assert response.status_code == 202
    assert "authorization" not in api.target_requests()[0].headers


@pytest.mark.asyncio
async def test_queue_request_is_deprecated(async_client: AsyncEZThrottle) -> None:
    with pytest.deprecated_call():
        result = await async_client.queue_request(TARGET, "https://app.example.com/hook")
    assert result["status"] == "queued"


@pytest.mark.asyncio
async def test_step_execute_async(async_client: AsyncEZThrottle, api: Any) -> None:
    step = Step(async_client).url(TARGET).webhooks([{"url": "https://app.example.com/hook"}])
    assert (await step.execute_async())["status"] == "queued"
    assert api.api_requests()[0].json == step._build_job_payload()
    with pytest.raises(TypeError, match="execute_async"):
        step.execute()


@pytest.mark.asyncio
async def test_sync_client_with_execute_async_is_refused(client: EZThrottle) -> None:
    with pytest.raises(TypeError, match="AsyncEZThrottle"):
        await Step(client).url(TARGET).execute_async()


@pytest.mark.asyncio
async def test_close_is_an_alias_of_aclose(api: Any) -> None:
    client = AsyncEZThrottle(api.api_key, api.url)
    await client.close()
    assert client._http.is_closed

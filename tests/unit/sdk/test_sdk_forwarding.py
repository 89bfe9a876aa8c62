"""@auto_forward on sync and async functions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from ezthrottle import (
    AsyncEZThrottle,
    EZThrottle,
    ForwardToEZThrottle,
    ValidationError,
    auto_forward,
)

pytestmark = pytest.mark.timeout(30)

TARGET = "https://api.stripe.example.com/charges"


def test_forwards_the_raised_request(client: EZThrottle, api: Any) -> None:
    @auto_forward(client)
    def process_payment(order_id: str) -> dict[str, Any]:
        raise ForwardToEZThrottle(
            url=TARGET,
            method="POST",
            headers={"Authorization": "Bearer sk_live_x"},
            body='{"amount": 1000}',
            idempotent_key=f"order_{order_id}",
            metadata={"order_id": order_id},
            webhooks=[{"url": "https://app.example.com/payment-complete"}],
            regions=["iad", "lax"],
        )

    assert process_payment.__name__ == "process_payment"
    result = process_payment("12345")
    assert result == {"job_id": "job_1", "status": "queued", "idempotent_key": "order_12345"}
    assert api.api_requests()[0].json == {
        "url": TARGET,
        "method": "POST",
        "headers": {"Authorization": "Bearer sk_live_x"},
        "body": '{"amount": 1000}',
        "metadata": {"order_id": "12345"},
        "webhooks": [{"url": "https://app.example.com/payment-complete"}],
        "regions": ["iad", "lax"],
        "idempotent_key": "order_12345",
    }


def test_fresh_uuid4_key_when_none_given(client: EZThrottle, api: Any) -> None:
    @auto_forward(client)
    def poll() -> None:
        raise ForwardToEZThrottle(url=TARGET)

    poll()
    poll()
    keys = [r.json["idempotent_key"] for r in api.api_requests()]
    assert keys[0] != keys[1] and all(uuid.UUID(k).version == 4 for k in keys)


def test_other_outcomes_pass_through(client: EZThrottle, api: Any) -> None:
    @auto_forward(client)
    def works() -> str:
        return "direct"

    @auto_forward(client)
    def breaks() -> None:
        raise KeyError("not ours")

    @auto_forward(client)
    def no_url() -> None:
        raise ForwardToEZThrottle("no url given")

    assert works() == "direct"
    with pytest.raises(KeyError):
        breaks()
    with pytest.raises(ValidationError, match="url"):
        no_url()
    assert api.received == []


def test_http_errors_listed_in_fallback_on_error_are_forwarded(client: EZThrottle, api: Any) -> None:
    @auto_forward(client, fallback_on_error=[429, 500])
    def legacy_call(status: int) -> Any:
        response = httpx.post(f"{api.url}/target/status/{status}", content="data", headers={"X-K": "v"})
        response.raise_for_status()
        return response.text

    assert legacy_call(200) == "target says 200"
    result = legacy_call(429)
    assert result["status"] == "queued"
    forwarded = api.api_requests()[0].json
    assert forwarded["url"] == f"{api.url}/target/status/429"
    assert forwarded["method"] == "POST" and forwarded["body"] == "data"
    assert forwarded["headers"]["x-k"] == "v"
    assert "host" not in forwarded["headers"] and "content-length" not in forwarded["headers"]
    with pytest.raises(httpx.HTTPStatusError):
        legacy_call(404)  # not listed


def test_requests_http_errors_are_forwarded_too(client: EZThrottle, api: Any) -> None:
    requests = pytest.importorskip("requests")

    @auto_forward(client, fallback_on_error=[503])
    def legacy_call() -> Any:
        response = requests.put(f"{api.url}/target/status/503", data="payload", timeout=5)
        response.raise_for_status()
        return response.text

    assert legacy_call()["status"] == "queued"
    forwarded = api.api_requests()[0].json
    assert (forwarded["method"], forwarded["body"]) == ("PUT", "payload")
    assert forwarded["url"] == f"{api.url}/target/status/503"


@pytest.mark.asyncio
async def test_async_function_with_async_client(async_client: AsyncEZThrottle, api: Any) -> None:
    @auto_forward(async_client)
    async def fetch(order_id: str) -> Any:
        raise ForwardToEZThrottle(url=TARGET, idempotent_key=order_id)

    result = await fetch("o-1")
    assert result == {"job_id": "job_1", "status": "queued", "idempotent_key": "o-1"}


@pytest.mark.asyncio
async def test_async_function_with_sync_client(client: EZThrottle, api: Any) -> None:
    @auto_forward(client)
    async def fetch() -> Any:
        raise ForwardToEZThrottle(url=TARGET, idempotent_key="o-2")

    @auto_forward(client)
    async def fine() -> str:
        return "direct"

    assert (await fetch())["idempotent_key"] == "o-2"
    assert await fine() == "direct"


@pytest.mark.asyncio
async def test_sync_function_with_async_client_is_refused(async_client: AsyncEZThrottle) -> None:
    with pytest.raises(TypeError, match="async function"):

        @auto_forward(async_client)
        def sync_function() -> None:
            pass


# -- network errors (issue 6, item 4) -----------------------------------------------------


def test_httpx_connection_errors_are_forwarded(client: EZThrottle, api: Any, closed_port_url: str) -> None:
    @auto_forward(client)
    def legacy_call() -> Any:
        return httpx.post(closed_port_url + "/charges", content='{"amount": 1}', headers={"X-K": "v"})

    result = legacy_call()
    assert result["status"] == "queued"
    [forwarded] = [r.json for r in api.api_requests()]
    assert forwarded["url"] == closed_port_url + "/charges"
    assert (forwarded["method"], forwarded["body"]) == ("POST", '{"amount": 1}')
    assert forwarded["headers"]["x-k"] == "v"
    assert uuid.UUID(forwarded["idempotent_key"]).version == 4  # a fresh UNIQUE key


def test_requests_connection_errors_and_timeouts_are_forwarded(client: EZThrottle, api: Any, closed_port_url: str) -> None:
    requests = pytest.importorskip("requests")

    @auto_forward(client, fallback_on_error=[429])
    def refused() -> Any:
        return requests.put(closed_port_url + "/x", data="payload", timeout=5).text

    @auto_forward(client)
    def too_slow() -> Any:
        return requests.get(f"{api.url}/target/sleep/2000", timeout=0.2).text

    assert refused()["status"] == "queued"
    assert too_slow()["status"] == "queued"
    first, second = (r.json for r in api.api_requests())
    assert (first["method"], first["url"], first["body"]) == ("PUT", closed_port_url + "/x", "payload")
    assert (second["method"], second["url"]) == ("GET", f"{api.url}/target/sleep/2000")
    assert first["idempotent_key"] != second["idempotent_key"]


@pytest.mark.asyncio
async def test_async_httpx_network_errors_are_forwarded(async_client: AsyncEZThrottle, api: Any, closed_port_url: str) -> None:
    @auto_forward(async_client)
    async def refused() -> Any:
        async with httpx.AsyncClient() as http:
            return (await http.get(closed_port_url + "/status")).text

    @auto_forward(async_client, fallback_on_error=[500])
    async def too_slow() -> Any:
        async with httpx.AsyncClient(timeout=0.2) as http:
            return (await http.get(f"{api.url}/target/sleep/2000")).text

    assert (await refused())["status"] == "queued"
    assert (await too_slow())["status"] == "queued"
    urls = [r.json["url"] for r in api.api_requests()]
    assert urls == [closed_port_url + "/status", f"{api.url}/target/sleep/2000"]


@pytest.mark.asyncio
async def test_async_function_with_sync_client_forwards_network_errors(client: EZThrottle, api: Any, closed_port_url: str) -> None:
    @auto_forward(client)
    async def refused() -> Any:
        async with httpx.AsyncClient() as http:
            return (await http.delete(closed_port_url + "/thing")).text

    assert (await refused())["status"] == "queued"
    assert api.api_requests()[0].json["method"] == "DELETE"


def test_errors_that_are_not_network_errors_pass_through(client: EZThrottle, api: Any) -> None:
    requests = pytest.importorskip("requests")

    @auto_forward(client)
    def bad_url() -> Any:
        return requests.get("ftp://files.example.com/x")  # InvalidSchema: never sent

    @auto_forward(client)
    def unreachable_ezthrottle() -> Any:
        raise ConnectionError("a builtins.ConnectionError, not from requests or httpx")

    with pytest.raises(requests.exceptions.InvalidSchema):
        bad_url()
    with pytest.raises(ConnectionError):
        unreachable_ezthrottle()
    assert api.api_requests() == []

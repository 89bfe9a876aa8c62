"""The sync client against a loopback server that speaks the wire contract."""

from __future__ import annotations

import builtins
import time
import uuid
from typing import Any

import httpx
import pytest

import ezthrottle
from ezthrottle import (
    AuthenticationError,
    ConnectionError,
    EZThrottle,
    IdempotentStrategy,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    Step,
    TimeoutError,
    ValidationError,
)
from ezthrottle.client import DEFAULT_BASE_URL, MAX_RETRIES

pytestmark = pytest.mark.timeout(30)

TARGET = "https://api.example.com/v1/charges"


# -- construction -----------------------------------------------------------------------


def test_missing_api_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EZTHROTTLE_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="EZTHROTTLE_API_KEY"):
        EZThrottle()
    with pytest.raises(AuthenticationError):
        EZThrottle(api_key="")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, api: Any) -> None:
    monkeypatch.setenv("EZTHROTTLE_API_KEY", api.api_key)
    monkeypatch.setenv("EZTHROTTLE_URL", api.url + "/")
    with EZThrottle() as client:
        assert client.base_url == api.url
        assert client.submit_job(TARGET)["status"] == "queued"
    monkeypatch.delenv("EZTHROTTLE_URL")
    with EZThrottle() as client:
        assert client.base_url == DEFAULT_BASE_URL


def test_published_constructor_arguments_still_construct(api: Any) -> None:
    """1.3.0's parameters, by keyword or by position, name the edge; base_url wins over them."""
    with EZThrottle(api.api_key, ezthrottle_url=api.url) as client:
        assert client.base_url == api.url
    with EZThrottle(api.api_key, tracktags_url=api.url) as client:  # where 1.3.0 sent requests
        assert client.base_url == api.url
    with EZThrottle(api.api_key, api.url, api.url) as positional:  # 1.3.0's positions
        assert positional.submit_job(TARGET + "?positional")["status"] == "queued"
    with pytest.warns(DeprecationWarning, match="tracktags_url, start_webhook_server"):
        legacy = EZThrottle(
            api.api_key,
            tracktags_url="https://tracktags.example.com",
            ezthrottle_url=api.url,
            start_webhook_server=True,
        )
    with legacy:
        assert legacy.base_url == api.url
        assert legacy.submit_job(TARGET)["status"] == "queued"
    with EZThrottle(api.api_key, base_url="http://127.0.0.1:1", ezthrottle_url=api.url) as explicit:
        assert explicit.base_url == "http://127.0.0.1:1"


def test_repr_hides_the_key(client: EZThrottle) -> None:
    assert client._api_key not in repr(client)
    assert "****" in repr(client)


def test_bad_settings() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        EZThrottle("k", "ftp://example.com")
    with pytest.raises(ValidationError, match="timeout_s"):
        EZThrottle("k", timeout_s=0)


def test_context_manager_closes_the_pool(api: Any) -> None:
    with EZThrottle(api.api_key, api.url) as client:
        pass
    assert client._http.is_closed


# -- submit_job -------------------------------------------------------------------------


def test_submit_sends_the_payload_with_auth_and_user_agent(client: EZThrottle, api: Any) -> None:
    result = client.submit_job(
        TARGET,
        "post",
        {"Content-Type": "application/json"},
        '{"amount": 1}',
        webhooks=[{"url": "https://app.example.com/hook"}],
        regions=["iad", "lax"],
        idempotent_key="order-1",
    )
    assert result == {"job_id": "job_1", "status": "queued", "idempotent_key": "order-1"}
    [request] = api.api_requests()
    assert (request.method, request.path) == ("POST", "/api/v1/jobs")
    assert request.headers["authorization"] == f"Bearer {api.api_key}"
    assert request.headers["user-agent"] == f"ezthrottle-python/{ezthrottle.__version__}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "url": TARGET,
        "method": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": '{"amount": 1}',
        "webhooks": [{"url": "https://app.example.com/hook"}],
        "regions": ["iad", "lax"],
        "idempotent_key": "order-1",
    }


def test_submit_omits_defaults_like_the_published_client(client: EZThrottle, api: Any) -> None:
    client.submit_job(
        TARGET,
        headers={},
        body="",
        metadata={},
        webhooks=[],
        webhook_quorum=1,
        regions=[],
        region_policy="fallback",
        execution_mode="race",
        retry_policy={},
        fallback_job={},
        on_success={},
        on_failure={},
    )
    assert api.api_requests()[0].json == {"url": TARGET, "method": "GET"}


def test_duplicate_submission_returns_the_first_job(client: EZThrottle) -> None:
    first = client.submit_job(TARGET, idempotent_key="order-7")
    again = client.submit_job(TARGET, idempotent_key="order-7")
    assert first["status"] == "queued"
    assert again == {"job_id": first["job_id"], "status": "duplicate", "idempotent_key": "order-7"}
    hashed = client.submit_job(TARGET, "POST", body="same")
    assert client.submit_job(TARGET, "POST", body="same")["job_id"] == hashed["job_id"]


def test_step_execute_submits_its_payload(client: EZThrottle, api: Any) -> None:
    step = (
        Step(client)
        .url(TARGET)
        .method("POST")
        .body("x")
        .regions(["ord"])
        .fallback(Step().url("https://backup.example.com"), trigger_on_error=[500])
    )
    result = step.execute()
    assert result["status"] == "queued"
    assert api.api_requests()[0].json == step._build_job_payload()


def test_unique_steps_are_never_duplicates(client: EZThrottle, api: Any) -> None:
    step = Step(client).url(TARGET).idempotent_strategy(IdempotentStrategy.UNIQUE)
    results = [step.execute(), step.execute()]
    assert [r["status"] for r in results] == ["queued", "queued"]
    keys = [r.json["idempotent_key"] for r in api.api_requests()]
    assert keys[0] != keys[1] and all(uuid.UUID(k).version == 4 for k in keys)


def test_invalid_payload_fails_before_any_request(client: EZThrottle, api: Any) -> None:
    with pytest.raises(ValidationError, match="method"):
        client.submit_job(TARGET, method="FETCH")
    with pytest.raises(ValueError, match="url"):
        client.submit_job("not a url")
    assert api.received == []


# -- error mapping ----------------------------------------------------------------------


def test_unknown_key_is_an_authentication_error(api: Any) -> None:
    with EZThrottle("ezt_wrong_key", api.url) as client, pytest.raises(AuthenticationError) as info:
        client.submit_job(TARGET)
    assert (info.value.status_code, info.value.code) == (401, "unauthorized")
    assert "missing or unknown API key" in str(info.value)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", ValidationError),
        (403, "forbidden", AuthenticationError),
        (413, "payload_too_large", ValidationError),
        (500, "internal", ServerError),
    ],
)
def test_error_statuses_map_to_classes(client: EZThrottle, api: Any, status: int, code: str, cls: type) -> None:
    api.script(api.error(status, code, "from the server"))
    with pytest.raises(cls) as info:
        client.submit_job(TARGET)
    assert type(info.value) is cls
    assert (info.value.status_code, info.value.code) == (status, code)
    assert len(api.api_requests()) == 1  # errors with an answer are never retried


def test_oversized_body_is_413(client: EZThrottle) -> None:
    with pytest.raises(ValidationError) as info:
        client.submit_job(TARGET, "POST", body="x" * 70_000)
    assert (info.value.status_code, info.value.code) == (413, "payload_too_large")


def test_rate_limit_carries_retry_at(client: EZThrottle, api: Any) -> None:
    api.script(api.error(429, "rate_limited", "slow down", headers={"Retry-After": "7"}))
    before_ms = time.time() * 1000
    with pytest.raises(RateLimitError) as info:
        client.submit_job(TARGET)
    assert not isinstance(info.value, QuotaExceededError)
    assert info.value.retry_after_s == 7
    assert before_ms + 7000 <= info.value.retry_at <= time.time() * 1000 + 7000  # type: ignore[operator]


def test_quota_exceeded(client: EZThrottle, api: Any) -> None:
    api.script(api.error(429, "quota_exceeded", "monthly quota used", headers={"Retry-After": "3600"}))
    with pytest.raises(QuotaExceededError) as info:
        client.submit_job(TARGET)
    assert info.value.retry_after_s == 3600


def test_connection_refused(closed_port_url: str) -> None:
    with EZThrottle("k", closed_port_url) as client, pytest.raises(ConnectionError) as info:
        client.submit_job(TARGET)
    assert str(info.value).startswith(f"cannot reach {closed_port_url}")
    assert isinstance(info.value, builtins.ConnectionError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_dropped_connection_is_retried_with_the_same_payload(client: EZThrottle, api: Any) -> None:
    api.script(api.drop(), api.drop())
    result = client.submit_job(TARGET, idempotent_key="order-9")
    assert result["status"] == "queued"
    attempts = api.api_requests()
    assert [a.dropped for a in attempts] == [True, True, False]
    assert len({a.body for a in attempts}) == 1


def test_retries_are_bounded(client: EZThrottle, api: Any) -> None:
    api.script(*[api.drop()] * (MAX_RETRIES + 2))
    with pytest.raises(ConnectionError):
        client.get_job("job_1")
    assert len(api.api_requests()) == MAX_RETRIES + 1


def test_read_timeout_is_not_retried(api: Any) -> None:
    api.script(api.slow(0.5))
    with EZThrottle(api.api_key, api.url, timeout_s=0.1) as client, pytest.raises(TimeoutError):
        client.submit_job(TARGET)
    assert len(api.api_requests()) == 1


def test_forward_or_fallback(closed_port_url: str, client: EZThrottle) -> None:
    with EZThrottle("k", closed_port_url) as down:
        assert down.forward_or_fallback(lambda: "direct", TARGET) == "direct"
    assert client.forward_or_fallback(lambda: "direct", TARGET, "POST", body="b")["status"] == "queued"


# -- jobs, direct calls, legacy ---------------------------------------------------------


def test_get_job(client: EZThrottle, api: Any) -> None:
    job_id = client.submit_job(TARGET, idempotent_key="k-1")["job_id"]
    job = client.get_job(job_id)
    assert job["job_id"] == job_id and job["status"] == "queued"
    assert job["idempotent_key"] == "k-1" and job["attempts"] == [] and job["result"] is None
    with pytest.raises(NotFoundError, match="no job 'job_404'"):
        client.get_job("job_404")
    with EZThrottle(api.other_api_key, api.url) as other, pytest.raises(NotFoundError):
        other.get_job(job_id)
    with pytest.raises(ValidationError):
        client.get_job("")


def test_request_goes_straight_to_the_target_without_the_key(client: EZThrottle, api: Any) -> None:
    response = client.request(f"{api.url}/target/status/418", "post", {"X-Mine": "1"}, "hello")
    assert isinstance(response, httpx.Response)
    assert response.status_code == 418 and response.text == "target says 418"
    [seen] = api.target_requests()
    assert seen.method == "POST" and seen.body == b"hello" and seen.headers["x-mine"] == "1"
    assert "authorization" not in seen.headers
    assert api.api_requests("/api/") == []


def test_request_network_errors_are_ours(client: EZThrottle, closed_port_url: str) -> None:
    with pytest.raises(ConnectionError, match=closed_port_url):
        client.request(closed_port_url + "/x")


def test_queue_request_is_deprecated_but_works(client: EZThrottle, api: Any) -> None:
    with pytest.deprecated_call(match="submit_job"):
        result = client.queue_request(TARGET, "https://app.example.com/hook", "POST", body="b")
    assert result["status"] == "queued"
    assert api.api_requests()[0].json == {
        "url": TARGET,
        "method": "POST",
        "body": "b",
        "webhooks": [{"url": "https://app.example.com/hook", "has_quorum_vote": True}],
    }


# -- webhook secrets ----------------------------------------------------------------------


PRIMARY = "primary_secret_0123456789"
SECONDARY = "secondary_secret_987654321"


def test_webhook_secret_lifecycle(client: EZThrottle, api: Any) -> None:
    with pytest.raises(NotFoundError, match="create_webhook_secret"):
        client.get_webhook_secret()
    assert client.create_webhook_secret(PRIMARY, SECONDARY)["status"] == "ok"
    assert api.api_requests()[-1].json == {"primary_secret": PRIMARY, "secondary_secret": SECONDARY}
    assert client.get_webhook_secret() == {
        "customer_id": "acme",
        "primary_secret": "prim****789",
        "secondary_secret": "seco****321",
        "has_secondary": True,
    }
    assert client.delete_webhook_secret()["status"] == "ok"
    with pytest.raises(NotFoundError):
        client.get_webhook_secret()


def test_short_secrets_fail_before_any_request(client: EZThrottle, api: Any) -> None:
    with pytest.raises(ValueError, match="16"):
        client.create_webhook_secret("short")
    with pytest.raises(ValueError, match="secondary_secret"):
        client.create_webhook_secret(PRIMARY, "short")
    with pytest.raises(ValueError, match="new_secret"):
        client.rotate_webhook_secret("short")
    assert api.received == []


def test_rotation(client: EZThrottle, api: Any) -> None:
    client.rotate_webhook_secret(PRIMARY)  # the server swaps: nothing configured yet, so just PRIMARY
    assert (api.api_requests()[-1].path, api.api_requests()[-1].json) == ("/api/v1/webhook-secrets/rotate", {"new_secret": PRIMARY})
    assert client.get_webhook_secret()["has_secondary"] is False
    client.rotate_webhook_secret("third_secret_0123456789")  # the old primary stays valid as secondary
    view = client.get_webhook_secret()
    assert (view["primary_secret"], view["secondary_secret"]) == ("thir****789", PRIMARY[:4] + "****" + PRIMARY[-3:])
    client.rotate_webhook_secret(SECONDARY, current_secret=PRIMARY)  # an explicit pair is set as given
    assert api.api_requests()[-1].json == {"primary_secret": SECONDARY, "secondary_secret": PRIMARY}

"""Step: early validation, workflow shape, and FRUGAL execution against loopback."""

from __future__ import annotations

from typing import Any

import pytest

from ezthrottle import (
    AsyncEZThrottle,
    EZThrottle,
    IdempotentStrategy,
    Step,
    StepType,
    ValidationError,
)

pytestmark = pytest.mark.timeout(30)

URL = "https://api.example.com/v1/x"


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.url("api.example.com/no-scheme"), "absolute http"),
        (lambda s: s.url(""), "url is required"),
        (lambda s: s.method("FETCH"), "method must be one of"),
        (lambda s: s.method(None), "method"),
        (lambda s: s.headers({"X-Count": 3}), "headers"),
        (lambda s: s.body({"amount": 1}), "json.dumps"),
        (lambda s: s.webhook_quorum(0), "webhook_quorum must be an integer >= 1"),
        (lambda s: s.webhook_quorum(True), "webhook_quorum"),
        (lambda s: s.webhooks([{"uri": "https://a.example.com"}]), "unknown keys"),
        (lambda s: s.webhooks(["https://a.example.com"]), r"webhooks\[0\] must be a dict"),
        (
            lambda s: s.webhooks([{"url": "https://a.example.com", "has_quorum_vote": "yes"}]),
            "bool",
        ),
        (lambda s: s.regions("iad"), "list of region ids"),
        (lambda s: s.region_policy("nearest"), "region_policy"),
        (lambda s: s.execution_mode("all"), "execution_mode"),
        (lambda s: s.retry_policy({"max_retry": 3}), "unknown keys"),
        (lambda s: s.retry_policy({"retry_codes": [999]}), "status codes"),
        (lambda s: s.retry_policy({"max_retries": -1}), "max_retries"),
        (lambda s: s.retry_at(1_767_225_600), "looks like seconds"),
        (lambda s: s.idempotent_key(""), "idempotent_key"),
        (lambda s: s.type("fast"), "unknown step type"),
        (lambda s: s.idempotent_strategy("random"), "unknown idempotent strategy"),
        (lambda s: s.fallback_on_error(["429"]), "status codes"),
        (lambda s: s.local_timeout(0), "local_timeout"),
        (lambda s: s.fallback("https://backup.example.com"), "takes a Step"),
        (
            lambda s: s.fallback(Step().url(URL), trigger_on_error=[500], trigger_on_timeout=10),
            "not both",
        ),
        (lambda s: s.fallback(Step().url(URL), trigger_on_timeout=0), "trigger_on_timeout"),
        (lambda s: s.on_failure(Step().url(URL), timeout_ms=-1), "timeout_ms"),
    ],
)
def test_bad_values_fail_at_the_call(call: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        call(Step())
    assert isinstance(info.value, ValueError)


def test_missing_url_fails_when_building() -> None:
    with pytest.raises(ValueError, match="URL is required"):
        Step()._build_job_payload()
    with pytest.raises(ValueError, match="URL is required"):
        Step().url(URL).on_success(Step())._build_job_payload()


def test_quorum_needs_enough_voting_webhooks() -> None:
    hooks = [
        {"url": "https://a.example.com"},
        {"url": "https://b.example.com", "has_quorum_vote": False},
    ]
    with pytest.raises(ValidationError, match="only 1 webhook"):
        Step().url(URL).webhooks(hooks).webhook_quorum(2)._build_job_payload()
    assert Step().url(URL).webhooks(hooks).webhook_quorum(1)._build_job_payload()["webhooks"] == hooks
    only_voters = [{"url": "https://a.example.com", "has_quorum_vote": False}]
    with pytest.raises(ValidationError, match="only 0 webhook"):
        Step().url(URL).webhooks(only_voters)._build_job_payload()
    assert Step().url(URL).webhook_quorum(3)._build_job_payload()["webhook_quorum"] == 3


def test_strings_are_accepted_for_enums() -> None:
    step = Step().url(URL).type("frugal").idempotent_strategy("unique")
    assert step._step_type is StepType.FRUGAL
    assert step._idempotent_strategy is IdempotentStrategy.UNIQUE


def test_cycles_are_refused() -> None:
    step = Step().url(URL)
    step.on_success(step)
    with pytest.raises(ValidationError, match="cycle"):
        step._build_job_payload()
    a, b = Step().url(URL), Step().url("https://b.example.com")
    a.fallback(b)
    b.on_failure(a)
    with pytest.raises(ValidationError, match="cycle"):
        a._build_job_payload()


def test_a_shared_step_is_not_a_cycle() -> None:
    analytics = Step().url("https://analytics.example.com")
    step = Step().url(URL).on_success(analytics).on_failure(analytics)
    payload = step._build_job_payload()
    assert payload["on_success"] == payload["on_failure"] == {"url": analytics._url, "method": "GET"}


def test_a_fallback_with_its_own_chain_must_be_last() -> None:
    nested = Step().url("https://b.example.com").fallback(Step().url("https://c.example.com"))
    step = Step().url(URL).fallback(nested).fallback(Step().url("https://d.example.com"))
    with pytest.raises(ValidationError, match="single line"):
        step._build_job_payload()


def test_setters_copy_their_arguments() -> None:
    headers = {"A": "1"}
    step = Step().url(URL).headers(headers)
    headers["B"] = "2"
    assert step._build_job_payload()["headers"] == {"A": "1"}


def test_execute_needs_a_client() -> None:
    with pytest.raises(ValueError, match="client is required"):
        Step().url(URL).execute()


def test_descriptions() -> None:
    step = Step().url(URL).description("fetch a customer").response_description("a customer record")
    assert step.get_description() == "fetch a customer"
    assert step.get_response_description() == "a customer record"
    assert step.get_execution_history() == []
    assert step.execution_trace() == "No execution history."
    assert repr(step) == f"<Step performance GET {URL}>"


# -- FRUGAL: local first ----------------------------------------------------------------


def target(api: Any, status: int) -> str:
    return f"{api.url}/target/status/{status}"


def test_frugal_success_stays_local(client: EZThrottle, api: Any) -> None:
    step = Step(client).url(target(api, 200)).type(StepType.FRUGAL).description("ping")
    result = step.execute()
    assert result == {
        "status": "success",
        "executed_locally": True,
        "status_code": 200,
        "response": "target says 200",
    }
    assert api.api_requests() == []
    assert step.get_execution_history() == [{"step": "ping", "status": "success", "response": "target says 200"}]


def test_frugal_success_runs_the_success_chain(client: EZThrottle, api: Any) -> None:
    notify = Step().url("https://notify.example.com").webhooks([{"url": "https://app.example.com/h"}])
    analytics = Step().url(target(api, 204)).type(StepType.FRUGAL).description("analytics")
    step = Step(client).url(target(api, 200)).type(StepType.FRUGAL).on_success(notify)
    notify.on_success(analytics)
    step.execute()
    [submitted] = api.api_requests()
    assert submitted.json == notify._build_job_payload()  # PERFORMANCE: submitted with its own chain
    step2 = Step(client).url(target(api, 200)).type("frugal").response_description("ok").on_success(analytics)
    step2.execute()
    assert [e["step"] for e in step2.get_execution_history()] == [
        f"GET {target(api, 200)}",
        "analytics",
    ]
    assert "Meaning: ok" in step2.execution_trace()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_frugal_forwards_on_fallback_codes(client: EZThrottle, api: Any, status: int) -> None:
    step = Step(client).url(target(api, status)).type(StepType.FRUGAL).idempotent_key(f"k-{status}")
    result = step.execute()
    assert result == {"job_id": "job_1", "status": "queued", "idempotent_key": f"k-{status}"}
    assert api.api_requests()[0].json == step._build_job_payload()
    assert api.api_requests()[0].json["type"] == "frugal"  # forwarded: the server runs it
    assert len(api.target_requests()) == 1


def test_frugal_forwards_on_network_errors(client: EZThrottle, api: Any, closed_port_url: str) -> None:
    step = Step(client).url(closed_port_url + "/down").type(StepType.FRUGAL)
    assert step.execute()["status"] == "queued"
    assert api.api_requests()[0].json["url"] == closed_port_url + "/down"


def test_frugal_other_errors_fail_locally_and_run_on_failure(client: EZThrottle, api: Any) -> None:
    alert = Step().url(target(api, 201)).type(StepType.FRUGAL).description("alert")
    step = Step(client).url(target(api, 404)).type(StepType.FRUGAL).description("fetch").on_failure(alert)
    result = step.execute()
    assert result == {
        "status": "failed",
        "executed_locally": True,
        "status_code": 404,
        "error": "Request failed: 404",
    }
    assert api.api_requests() == []
    assert [r.path for r in api.target_requests()] == ["/target/status/404", "/target/status/201"]
    assert step.execution_trace().splitlines() == [
        "1. [FAILED] fetch",
        "   Error: Request failed: 404",
        "2. [SUCCESS] alert",
        "   Response: target says 201",
    ]


def test_frugal_custom_fallback_codes(client: EZThrottle, api: Any) -> None:
    step = Step(client).url(target(api, 404)).type(StepType.FRUGAL).fallback_on_error([404])
    assert step.execute()["status"] == "queued"
    step = Step(client).url(target(api, 500)).type(StepType.FRUGAL).fallback_on_error([429])
    assert step.execute()["status"] == "failed"


def test_frugal_tries_matching_local_fallbacks_first(client: EZThrottle, api: Any) -> None:
    step = (
        Step(client)
        .url(target(api, 500))
        .type(StepType.FRUGAL)
        .fallback(Step().url(target(api, 502)).type(StepType.FRUGAL), trigger_on_error=[503])  # no match
        .fallback(Step().url("https://perf.example.com"), trigger_on_error=[500])  # PERFORMANCE: server only
        .fallback(Step().url(target(api, 200)).type(StepType.FRUGAL), trigger_on_error=[500])
    )
    result = step.execute()
    assert result["status"] == "success" and result["status_code"] == 200
    assert [r.path for r in api.target_requests()] == ["/target/status/500", "/target/status/200"]
    assert api.api_requests() == []


def test_frugal_forwards_when_local_fallbacks_fail(client: EZThrottle, api: Any) -> None:
    step = (
        Step(client)
        .url(target(api, 503))
        .type(StepType.FRUGAL)
        .idempotent_key("wf-1")
        .fallback(Step().url(target(api, 500)).type(StepType.FRUGAL))
    )
    assert step.execute()["idempotent_key"] == "wf-1"
    assert len(api.target_requests()) == 2
    assert api.api_requests()[0].json["fallback_job"]["url"] == target(api, 500)


def test_frugal_timeout_triggers_on_timeout_fallbacks(client: EZThrottle, api: Any) -> None:
    step = (
        Step(client)
        .url(f"{api.url}/target/sleep/500")
        .type(StepType.FRUGAL)
        .local_timeout(0.1)
        .fallback(Step().url(target(api, 200)).type(StepType.FRUGAL), trigger_on_timeout=100)
    )
    assert step.execute()["status_code"] == 200
    assert api.api_requests() == []


@pytest.mark.asyncio
async def test_frugal_async_twin(async_client: AsyncEZThrottle, api: Any) -> None:
    ok = await Step(async_client).url(target(api, 200)).type(StepType.FRUGAL).execute_async()
    assert ok["status"] == "success"
    forwarded = await Step(async_client).url(target(api, 429)).type(StepType.FRUGAL).execute_async()
    assert forwarded["status"] == "queued"
    alert = Step().url(target(api, 201)).type(StepType.FRUGAL)
    failed = await Step(async_client).url(target(api, 400)).type(StepType.FRUGAL).on_failure(alert).execute_async()
    assert failed["status"] == "failed"
    assert [r.path for r in api.target_requests()] == [
        "/target/status/200",
        "/target/status/429",
        "/target/status/400",
        "/target/status/201",
    ]


def test_history_names_the_jobs_a_workflow_handed_to_ezthrottle(client: EZThrottle, api: Any) -> None:
    notify = Step().url("https://notify.example.com").description("notify")
    step = Step(client).url(target(api, 200)).type(StepType.FRUGAL).on_success(notify)
    step.execute()
    local, submitted = step.get_execution_history()
    assert local["status"] == "success"
    assert submitted == {"step": "notify", "status": "submitted", "job_id": "job_1"}
    assert step.execution_trace().splitlines()[-2:] == ["2. [SUBMITTED] notify", "   Job: job_1"]
    down = Step(client).url(target(api, 503)).type(StepType.FRUGAL).idempotent_key("k-down")
    down.execute()
    assert down.get_execution_history() == [{"step": f"GET {target(api, 503)}", "status": "forwarded", "job_id": "job_2"}]


def test_a_frugal_step_after_a_job_without_webhooks_is_reported(client: EZThrottle, api: Any) -> None:
    """It could never run: it only comes back in that job's webhook."""
    analytics = Step().url("https://analytics.example.com").type(StepType.FRUGAL)
    with pytest.warns(UserWarning, match=r"1 FRUGAL step\(s\).*on_success GET https://analytics"):
        Step(client).url("https://pay.example.com").on_success(analytics).execute()
    hooked = Step(client).url("https://pay.example.com/2").webhooks([{"url": "https://app.example.com/h"}]).on_success(analytics)
    slack = Step().url("https://slack.example.com").type(StepType.FRUGAL)
    forwarded = (
        Step(client)
        .url(target(api, 500))
        .type(StepType.FRUGAL)
        .fallback(Step().url("https://backup.example.com"), trigger_on_error=[500])
        .on_success(hooked)  # has webhooks: its FRUGAL step can come back
        .on_failure(slack)  # after the forwarded job and after the fallback it inherits
    )
    with pytest.warns(UserWarning) as caught:
        assert forwarded.execute()["status"] == "queued"
    [warning] = caught
    message = str(warning.message)
    assert message.startswith("2 FRUGAL step(s)") and "analytics" not in message
    assert f"on_failure GET https://slack.example.com after {target(api, 500)}" in message
    assert "on_failure GET https://slack.example.com after https://backup.example.com" in message

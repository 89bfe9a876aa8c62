"""WebhookHandler: signature first, FRUGAL steps claimed and run once, chains continued; adapters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from ezthrottle import (
    AsyncEZThrottle,
    EZThrottle,
    Step,
    StepType,
    ValidationError,
    WebhookHandler,
    WebhookVerificationError,
    sign_webhook,
)

pytestmark = pytest.mark.timeout(30)

SECRET = "primary_secret_0123456789"
OLD_SECRET = "old_secret_0123456789"


def webhook(job_id: str, status: str, frugal_steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A webhook payload as the server sends it (README fields + ``workflow``)."""
    return {
        "job_id": job_id,
        "idempotent_key": "k",
        "status": status,
        "response": {"status_code": 200, "headers": {}, "body": "{}"},
        "metadata": {},
        "workflow": {"root_job_id": job_id, "job_id": job_id, "frugal_steps": frugal_steps},
    }


def signed(payload: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {"X-EZThrottle-Signature": sign_webhook(body, secret)}


def normalised(step: Step) -> dict[str, Any]:
    """A step payload the way the server normalises it (nulls and defaults filled in)."""
    payload = step._build_job_payload()
    full: dict[str, Any] = {
        "method": "GET", "headers": {}, "body": None, "metadata": {}, "webhooks": [],
        "webhook_quorum": 1, "regions": None, "region_policy": "fallback",
        "execution_mode": "race",
        "retry_policy": {"max_retries": 3, "max_reroutes": 2, "retry_codes": [429, 503],
                         "reroute_codes": [500, 502, 504]},
        "type": "performance", "idempotent_key": None, "retry_at": None,
        "on_failure_timeout_ms": None, "fallback_job": None, "on_success": None, "on_failure": None,
    }  # fmt: skip
    full.update(payload)
    for child in ("on_success", "on_failure"):
        if payload.get(child):
            full[child] = {**normalised(Step().url(payload[child]["url"])), **payload[child]}
    return full


def job(client: EZThrottle) -> str:
    job_id: str = client.submit_job(f"https://api.example.com/parent/{uuid.uuid4()}")["job_id"]
    return job_id


def test_bad_signatures_are_refused_before_anything_runs(client: EZThrottle, api: Any) -> None:
    job_id = job(client)
    step = Step().url(f"{api.url}/target/status/200").type(StepType.FRUGAL)
    body, headers = signed(webhook(job_id, "success", [
        {"step_id": f"{job_id}:on_success", "relation": "on_success", "step": normalised(step)}
    ]))  # fmt: skip
    handler = WebhookHandler(client, secret=SECRET)
    for bad_headers in ({}, {"X-EZThrottle-Signature": "t=1,v1=00"}):
        with pytest.raises(WebhookVerificationError):
            handler.handle(body, bad_headers)
    with pytest.raises(WebhookVerificationError, match="signature_mismatch"):
        handler.handle(body + b" ", headers)
    assert api.target_requests() == []
    assert [r for r in api.api_requests() if "frugal-claims" in r.path] == []
    with pytest.raises(ValidationError, match="not JSON"):
        handler.handle(*_signed_raw(b"{nope"))
    with pytest.raises(ValidationError, match="relation"):
        handler.handle(*signed(webhook(job_id, "success", [
            {"step_id": "x", "relation": "later", "step": {}}
        ])))  # fmt: skip


def _signed_raw(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"x-ezthrottle-signature": sign_webhook(body, SECRET)}


def test_a_frugal_child_runs_once_however_often_the_webhook_comes(client: EZThrottle, api: Any) -> None:
    """The README's example 2: PERFORMANCE payment, then FRUGAL analytics when the webhook arrives."""
    job_id = job(client)
    analytics = Step().url(f"{api.url}/target/status/200?analytics").type(StepType.FRUGAL)
    payload = webhook(job_id, "success", [
        {"step_id": f"{job_id}:on_success", "relation": "on_success", "step": normalised(analytics)}
    ])  # fmt: skip
    handler = WebhookHandler(client, secret=SECRET, secondary_secret=OLD_SECRET)
    first = handler.handle(*signed(payload, OLD_SECRET))  # during a rotation, too
    assert first.verified_with == "valid_secondary" and first.job_id == job_id
    assert first.status == "success"
    [run] = first.steps
    assert run.status == "ran" and run.relation == "on_success"
    assert run.result is not None and run.result["executed_locally"] is True
    assert run.result["status_code"] == 200
    again = handler.handle(*signed(payload))  # a redelivery, or another webhook URL
    assert [s.status for s in again.steps] == ["already_claimed"]
    assert again.response_body() == {
        "ok": True,
        "job_id": job_id,
        "steps": [{"step_id": f"{job_id}:on_success", "relation": "on_success", "status": "already_claimed"}],
    }
    assert len(api.target_requests()) == 1  # ran exactly once


def test_the_chain_continues_locally_and_on_the_server(client: EZThrottle, api: Any) -> None:
    job_id = job(client)
    notify = Step().url("https://notify.example.com/send").webhooks([{"url": "https://app.example.com/hook"}])
    slack = Step().url(f"{api.url}/target/status/200?slack").type(StepType.FRUGAL)
    analytics = (
        Step()
        .url(f"{api.url}/target/status/200?analytics")
        .type(StepType.FRUGAL)
        .on_success(notify)  # PERFORMANCE: submitted
        .on_failure(slack)
    )
    fallback = (
        Step()
        .url(f"{api.url}/target/status/400?fallback")
        .type(StepType.FRUGAL)
        .on_failure(Step().url(f"{api.url}/target/status/200?alert").type(StepType.FRUGAL))
    )
    result = WebhookHandler(client, secret=SECRET).handle(*signed(webhook(job_id, "success", [
        {"step_id": f"{job_id}:on_success", "relation": "on_success", "step": normalised(analytics)},
        {"step_id": f"{job_id}:fallback", "relation": "fallback", "step": normalised(fallback)},
    ])))  # fmt: skip
    assert [s.status for s in result.steps] == ["ran", "ran"]
    assert result.steps[1].result is not None and result.steps[1].result["status"] == "failed"
    targets = sorted(r.path.split("?")[1] for r in api.target_requests())
    assert targets == ["alert", "analytics", "fallback"]  # slack did not run: analytics succeeded
    submitted = [r.json for r in api.api_requests() if r.path == "/api/v1/jobs"][1:]
    assert [s["url"] for s in submitted] == ["https://notify.example.com/send"]
    assert "type" not in submitted[0]


def test_a_frugal_step_that_fails_locally_is_forwarded_with_its_type(client: EZThrottle, api: Any) -> None:
    job_id = job(client)
    step = Step().url(f"{api.url}/target/status/503").type(StepType.FRUGAL).idempotent_key("s-1")
    result = WebhookHandler(client, secret=SECRET).handle(*signed(webhook(job_id, "failed", [
        {"step_id": f"{job_id}:on_failure", "relation": "on_failure", "step": normalised(step)}
    ])))  # fmt: skip
    [run] = result.steps
    assert run.status == "ran" and run.result is not None and run.result["status"] == "queued"
    forwarded = [r.json for r in api.api_requests() if r.path == "/api/v1/jobs"][-1]
    assert forwarded["url"].endswith("/target/status/503") and forwarded["type"] == "frugal"
    assert forwarded["idempotent_key"] == "s-1"


def test_a_failure_after_the_claim_is_reported_not_raised(client: EZThrottle, api: Any) -> None:
    job_id = job(client)
    step = Step().url(f"{api.url}/target/status/503").type(StepType.FRUGAL)
    payload = webhook(job_id, "failed", [
        {"step_id": f"{job_id}:on_failure", "relation": "on_failure", "step": normalised(step)}
    ])  # fmt: skip
    # the claim succeeds, then the forward is refused
    api.script(
        api.error(201, "ok"),  # the claim (scripted answers come first)
        api.error(422, "outbound_blocked", "target refused"),
    )
    [run] = WebhookHandler(client, secret=SECRET).handle(*signed(payload)).steps
    assert run.status == "error" and run.error is not None and "outbound_blocked" in run.error


def test_sync_and_async_handlers_need_the_matching_client(client: EZThrottle, async_client: AsyncEZThrottle) -> None:
    with pytest.raises(TypeError, match="handle_async"):
        WebhookHandler(async_client, secret=SECRET).handle(b"{}", {})
    with pytest.raises(ValidationError, match="secret"):
        WebhookHandler(client, secret="")
    assert SECRET not in repr(WebhookHandler(client, secret=SECRET))


@pytest.mark.asyncio
async def test_handle_async(async_client: AsyncEZThrottle, api: Any) -> None:
    job_id = (await async_client.submit_job("https://api.example.com/parent"))["job_id"]
    step = Step().url(f"{api.url}/target/status/200").type(StepType.FRUGAL)
    payload = webhook(job_id, "success", [
        {"step_id": f"{job_id}:on_success", "relation": "on_success", "step": normalised(step)}
    ])  # fmt: skip
    handler = WebhookHandler(async_client, secret=SECRET)
    first = await handler.handle_async(*signed(payload))
    second = await handler.handle_async(*signed(payload))
    assert [s.status for s in first.steps + second.steps] == ["ran", "already_claimed"]
    assert len(api.target_requests()) == 1


def test_payloads_without_frugal_steps_are_just_verified(client: EZThrottle, api: Any) -> None:
    payload = {"job_id": "job_9", "idempotent_key": "k", "status": "success", "response": None, "metadata": {}}
    result = WebhookHandler(client, secret=SECRET).handle(*signed(payload))
    assert result.steps == () and result.payload == payload
    assert api.api_requests() == []


# -- adapters -----------------------------------------------------------------------------


def _claimable(client: EZThrottle, api: Any) -> tuple[dict[str, Any], str]:
    job_id = job(client)
    step = Step().url(f"{api.url}/target/status/200").type(StepType.FRUGAL)
    return webhook(job_id, "success", [
        {"step_id": f"{job_id}:on_success", "relation": "on_success", "step": normalised(step)}
    ]), job_id  # fmt: skip


def test_the_sdk_imports_no_web_framework() -> None:
    probe = (
        "import sys, ezthrottle, ezthrottle.workflow, ezthrottle.adapters;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'flask', 'fastapi', 'starlette', 'werkzeug')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_flask_adapter(client: EZThrottle, api: Any) -> None:
    flask = pytest.importorskip("flask")
    from ezthrottle.adapters.flask import flask_webhook_view

    seen: list[Any] = []
    app = flask.Flask("t")
    handler = WebhookHandler(client, secret=SECRET)
    app.add_url_rule("/webhook", view_func=flask_webhook_view(handler, seen.append), methods=["POST"])
    payload, job_id = _claimable(client, api)
    body, headers = signed(payload)
    web = app.test_client()
    answer = web.post("/webhook", data=body, headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.get_json()["steps"][0]["status"] == "ran"
    assert seen[0].job_id == job_id
    assert web.post("/webhook", data=body, headers={"X-EZThrottle-Signature": "t=1,v1=0"}).status_code == 401
    assert web.post("/webhook", data=body, headers=headers).get_json()["steps"][0]["status"] == "already_claimed"


@pytest.mark.asyncio
async def test_fastapi_adapter(client: EZThrottle, async_client: AsyncEZThrottle, api: Any) -> None:
    fastapi = pytest.importorskip("fastapi")
    import httpx

    from ezthrottle.adapters.fastapi import fastapi_webhook_route

    for handler_client in (client, async_client):  # the sync client runs in the thread pool
        app = fastapi.FastAPI()
        handler = WebhookHandler(handler_client, secret=SECRET)
        app.add_api_route("/webhook", fastapi_webhook_route(handler), methods=["POST"])
        payload, _ = _claimable(client, api)
        body, headers = signed(payload)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
            answer = await web.post("/webhook", content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["steps"][0]["status"] == "ran"
            assert (await web.post("/webhook", content=b"{}", headers=headers)).status_code == 401
            old = sign_webhook(body, SECRET, int(time.time()) - 3600)
            expired = await web.post("/webhook", content=body, headers={"X-EZThrottle-Signature": old})
            assert expired.status_code == 401 and "timestamp_expired" in expired.text


@pytest.mark.asyncio
async def test_aiohttp_adapter(async_client: AsyncEZThrottle, client: EZThrottle, api: Any) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    from ezthrottle.adapters.aiohttp import aiohttp_webhook_view

    results: list[Any] = []

    async def on_result(result: Any) -> None:
        results.append(result)

    for handler_client in (async_client, client):  # the sync client runs in an executor
        payload, _ = _claimable(client, api)
        body, headers = signed(payload)
        app = web.Application()
        handler = WebhookHandler(handler_client, secret=SECRET)
        app.router.add_post("/webhook", aiohttp_webhook_view(handler, on_result))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/webhook"
                async with http.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 200 and (await resp.json())["steps"][0]["status"] == "ran"
                async with http.post(url, data=b"[]", headers=headers) as resp:
                    assert resp.status == 401
        finally:
            await runner.cleanup()
    assert len(results) == 2

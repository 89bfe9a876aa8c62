"""Our Step builds the payloads of the published ezthrottle 1.3.0 Step.

Exactly, byte for byte, for every payload without a FRUGAL step. A FRUGAL
step (the root, when it is forwarded, and every chained one) also carries
``"type": "frugal"``, which 1.3.0 never sends, so the server can hand FRUGAL
children back to the SDK instead of running them; apart from that key those
payloads are the published ones too.
"""

from __future__ import annotations

import json
import runpy
import uuid
from pathlib import Path
from typing import Any

import pytest

from unit.sdk.contract import FALLBACK_FIELDS, JOB_FIELDS

pytestmark = pytest.mark.timeout(600)  # the first run installs the published SDK

PUBLISHED_SCRIPT = Path(__file__).with_name("published_sdk.py")
PAST_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def c(name: str, *args: Any, **kwargs: Any) -> list[Any]:
    """One builder call."""
    return [name, list(args), kwargs]


def step(*calls: list[Any]) -> dict[str, Any]:
    """A nested Step, built from calls."""
    return {"$step": list(calls)}


def enum(member: str) -> dict[str, str]:
    return {"$enum": member}


URL = "https://api.example.com/v1/charges"

SCENARIOS: dict[str, list[list[Any]]] = {
    "simple_get": [c("url", URL)],
    "post_with_body_headers_metadata": [
        c("url", URL),
        c("method", "post"),
        c("headers", {"Authorization": "Bearer sk_live_x", "Content-Type": "application/json"}),
        c("body", '{"amount": 1000, "currency": "usd"}'),
        c("metadata", {"order_id": "o_1", "customer": "c_9"}),
    ],
    "empty_values_are_omitted": [
        c("url", URL),
        c("headers", {}),
        c("body", ""),
        c("metadata", {}),
        c("webhooks", []),
        c("regions", []),
    ],
    "explicit_defaults_are_omitted": [
        c("url", URL),
        c("method", "GET"),
        c("webhook_quorum", 1),
        c("region_policy", "fallback"),
        c("execution_mode", "race"),
        c("idempotent_strategy", enum("IdempotentStrategy.HASH")),
        c("type", enum("StepType.PERFORMANCE")),
    ],
    "webhooks_and_quorum": [
        c("url", URL),
        c(
            "webhooks",
            [
                {"url": "https://app.example.com/payment-complete", "has_quorum_vote": True},
                {"url": "https://analytics.example.com/track", "has_quorum_vote": False},
                {"url": "https://notify.example.com/alert"},
                {"url": "https://backup.example.com/hook", "regions": ["iad", "lax"]},
            ],
        ),
        c("webhook_quorum", 2),
    ],
    "regions_strict_fanout": [
        c("url", URL),
        c("regions", ["iad", "lax", "ord"]),
        c("region_policy", "strict"),
        c("execution_mode", "fanout"),
    ],
    "retry_policy": [
        c("url", URL),
        c(
            "retry_policy",
            {
                "max_retries": 5,
                "max_reroutes": 3,
                "retry_codes": [429, 503],
                "reroute_codes": [500, 502, 504],
            },
        ),
    ],
    "retry_at": [c("url", URL), c("retry_at", PAST_MS + 60_000)],
    "custom_key": [c("url", URL), c("idempotent_key", "order-1234")],
    "custom_key_beats_unique": [
        c("url", URL),
        c("idempotent_strategy", enum("IdempotentStrategy.UNIQUE")),
        c("idempotent_key", "order-1234"),
    ],
    "unique_key": [c("url", URL), c("idempotent_strategy", enum("IdempotentStrategy.UNIQUE"))],
    "fallback_on_error": [
        c("url", "https://primary.example.com"),
        c(
            "fallback",
            step(c("url", "https://backup.example.com")),
            trigger_on_error=[500, 502, 503],
        ),
    ],
    "fallback_on_timeout": [
        c("url", "https://primary.example.com"),
        c("fallback", step(c("url", "https://backup.example.com")), trigger_on_timeout=5000),
    ],
    "fallback_without_trigger": [
        c("url", "https://primary.example.com"),
        c("fallback", step(c("url", "https://backup.example.com"))),
    ],
    "fallback_chain_two_deep_siblings": [
        c("url", "https://primary.example.com"),
        c("method", "POST"),
        c("body", '{"q": 1}'),
        c(
            "fallback",
            step(c("url", "https://backup-1.example.com"), c("method", "POST"), c("regions", ["lax"])),
            trigger_on_error=[429, 500],
        ),
        c(
            "fallback",
            step(c("url", "https://backup-2.example.com"), c("idempotent_key", "fb-2")),
            trigger_on_timeout=3000,
        ),
    ],
    "fallback_chain_two_deep_nested": [
        c("url", "https://primary.example.com"),
        c(
            "fallback",
            step(
                c("url", "https://backup-1.example.com"),
                c(
                    "fallback",
                    step(c("url", "https://backup-2.example.com"), c("method", "put")),
                    trigger_on_error=[503],
                ),
            ),
            trigger_on_timeout=2500,
        ),
    ],
    "on_success_and_on_failure_with_timeout": [
        c("url", URL),
        c("webhooks", [{"url": "https://app.example.com/hook"}]),
        c(
            "on_success",
            step(
                c("url", "https://notify.example.com"),
                c("regions", ["iad", "lax"]),
                c("on_success", step(c("url", "https://analytics.example.com/track"))),
            ),
        ),
        c("on_failure", step(c("url", "https://hooks.slack.example.com/x")), timeout_ms=30_000),
    ],
    "on_failure_without_timeout": [
        c("url", URL),
        c("on_failure", step(c("url", "https://hooks.slack.example.com/x"))),
    ],
    "unique_keys_in_a_workflow": [
        c("url", URL),
        c("idempotent_strategy", enum("IdempotentStrategy.UNIQUE")),
        c(
            "fallback",
            step(
                c("url", "https://backup.example.com"),
                c("idempotent_strategy", enum("IdempotentStrategy.UNIQUE")),
            ),
            trigger_on_error=[500],
        ),
        c(
            "on_success",
            step(
                c("url", "https://notify.example.com"),
                c("idempotent_strategy", enum("IdempotentStrategy.UNIQUE")),
            ),
        ),
    ],
    "everything": [
        c("url", URL),
        c("method", "patch"),
        c("headers", {"X-Trace": "1"}),
        c("body", "payload"),
        c("metadata", {"k": "v"}),
        c("webhooks", [{"url": "https://a.example.com/h"}, {"url": "https://b.example.com/h"}]),
        c("webhook_quorum", 2),
        c("regions", ["iad"]),
        c("region_policy", "strict"),
        c("execution_mode", "fanout"),
        c("retry_policy", {"max_retries": 1}),
        c("retry_at", PAST_MS),
        c("idempotent_key", "all-1"),
        c("fallback", step(c("url", "https://backup.example.com")), trigger_on_error=[500]),
        c("on_success", step(c("url", "https://ok.example.com"))),
        c("on_failure", step(c("url", "https://ko.example.com")), timeout_ms=1000),
    ],
}


FRUGAL = enum("StepType.FRUGAL")

# Scenarios with FRUGAL steps, and where ours says "type": "frugal" (paths of keys).
FRUGAL_SCENARIOS: dict[str, tuple[list[list[Any]], set[str]]] = {
    "frugal_root_local_options_stay_local": (
        [
            c("url", URL),
            c("type", FRUGAL),
            c("fallback_on_error", [429, 500]),
            c("local_timeout", 5),
            c("description", "charge the card"),
            c("response_description", "a Stripe charge"),
        ],
        {""},
    ),
    "performance_then_frugal_analytics": (  # the README's example 2
        [
            c("url", "https://api.stripe.example.com/charges"),
            c("webhooks", [{"url": "https://app.example.com/payment-complete"}]),
            c("regions", ["iad", "lax"]),
            c(
                "on_success",
                step(c("url", "https://analytics.example.com/track"), c("type", FRUGAL)),
            ),
        ],
        {"on_success"},
    ),
    "complex_mixed_workflow": (  # the README's example 3
        [
            c("url", "https://cheap-api.example.com"),
            c("type", FRUGAL),
            c("fallback_on_error", [429, 500]),
            c(
                "fallback",
                step(c("url", "https://backup-api.example.com"), c("type", FRUGAL)),
                trigger_on_error=[500],
            ),
            c(
                "on_success",
                step(
                    c("url", "https://critical-webhook.example.com"),
                    c("type", enum("StepType.PERFORMANCE")),
                    c("webhooks", [{"url": "https://app.example.com/webhook"}]),
                    c("regions", ["iad", "lax", "ord"]),
                    c(
                        "on_success",
                        step(c("url", "https://analytics.example.com/track"), c("type", FRUGAL)),
                    ),
                ),
            ),
            c("on_failure", step(c("url", "https://hooks.slack.example.com/x"), c("type", FRUGAL))),
        ],
        {"", "fallback_job", "on_success.on_success", "on_failure"},
    ),
    "frugal_fallback_of_performance_step": (
        [
            c("url", "https://primary.example.com"),
            c(
                "fallback",
                step(c("url", "https://backup-1.example.com"), c("type", FRUGAL)),
                trigger_on_error=[503],
            ),
            c("fallback", step(c("url", "https://backup-2.example.com")), trigger_on_timeout=900),
        ],
        {"fallback_job"},
    ),
}


def _strip_frugal_types(value: Any, path: str = "", found: set[str] | None = None) -> Any:
    """The payload without ``"type": "frugal"``; ``found`` collects where it was."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "type" and item == "frugal" and found is not None:
                found.add(path)
                continue
            out[key] = _strip_frugal_types(item, f"{path}.{key}".lstrip("."), found)
        return out
    return value


def _normalize_unique_keys(value: Any) -> Any:
    """Replace uuid4 idempotent keys (random on both sides) by a marker."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "idempotent_key" and _is_uuid4(item):
                out[key] = "<uuid4>"
            else:
                out[key] = _normalize_unique_keys(item)
        return out
    if isinstance(value, list):
        return [_normalize_unique_keys(item) for item in value]
    return value


def _is_uuid4(value: Any) -> bool:
    try:
        return str(uuid.UUID(value, version=4)) == value
    except (TypeError, ValueError, AttributeError):
        return False


@pytest.fixture(scope="module")
def published_payloads(published: Any) -> dict[str, Any]:
    scenarios = {**SCENARIOS, **{name: calls for name, (calls, _) in FRUGAL_SCENARIOS.items()}}
    return published.run({"mode": "payloads", "data": scenarios})


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    """The script's own builder, run in this process against our SDK."""
    return runpy.run_path(str(PUBLISHED_SCRIPT))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_payload_matches_published(name: str, published_payloads: dict[str, Any], ours: dict[str, Any]) -> None:
    payload = ours["build_step"](SCENARIOS[name])._build_job_payload()
    assert _normalize_unique_keys(payload) == _normalize_unique_keys(published_payloads[name])


@pytest.mark.parametrize("name", sorted(FRUGAL_SCENARIOS))
def test_frugal_steps_add_only_their_type(name: str, published_payloads: dict[str, Any], ours: dict[str, Any]) -> None:
    calls, expected_paths = FRUGAL_SCENARIOS[name]
    payload = ours["build_step"](calls)._build_job_payload()
    found: set[str] = set()
    stripped = _strip_frugal_types(payload, found=found)
    assert found == expected_paths
    assert _normalize_unique_keys(stripped) == _normalize_unique_keys(published_payloads[name])


def test_payloads_without_frugal_steps_never_carry_a_type(ours: dict[str, Any]) -> None:
    for name, calls in SCENARIOS.items():
        found: set[str] = set()
        _strip_frugal_types(ours["build_step"](calls)._build_job_payload(), found=found)
        assert not found, name
        assert '"type": "performance"' not in json.dumps(ours["build_step"](calls)._build_job_payload())


def test_unique_keys_are_fresh_uuid4s(ours: dict[str, Any]) -> None:
    workflow = ours["build_step"](SCENARIOS["unique_keys_in_a_workflow"])
    first, second = workflow._build_job_payload(), workflow._build_job_payload()
    keys = [
        first["idempotent_key"],
        first["fallback_job"]["idempotent_key"],
        first["on_success"]["idempotent_key"],
    ]
    assert all(_is_uuid4(k) for k in keys)
    assert len(set(keys)) == 3
    assert second["idempotent_key"] not in keys


def test_the_table_covers_every_payload_field(published_payloads: dict[str, Any]) -> None:
    """A guard on the table itself: every contract field appears in some scenario."""
    seen: set[str] = set()

    def walk(payload: dict[str, Any]) -> None:
        seen.update(payload)
        for key in ("fallback_job", "on_success", "on_failure"):
            if key in payload:
                walk(payload[key])

    for payload in published_payloads.values():
        walk(payload)
    assert seen >= (JOB_FIELDS - {"type"}) | FALLBACK_FIELDS

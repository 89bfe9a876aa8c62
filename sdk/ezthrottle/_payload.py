"""The job payload: field checks and the one function that builds it.

Both ``Step`` and ``submit_job`` build payloads here, so they agree on the
wire format: defaults are left out, exactly as the published 1.3.0 SDK does,
and a bad value fails in the caller's code with a ``ValidationError`` (a
``ValueError``) instead of a 400 from the server later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Optional
from urllib.parse import urlsplit

from .exceptions import ValidationError

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REGION_POLICIES = ("fallback", "strict")
EXECUTION_MODES = ("race", "fanout")
RETRY_POLICY_KEYS = frozenset({"max_retries", "max_reroutes", "retry_codes", "reroute_codes"})
WEBHOOK_KEYS = frozenset({"url", "regions", "has_quorum_vote"})
# 1973-03-03 as epoch milliseconds: a smaller retry_at is surely in seconds.
_MIN_EPOCH_MS = 10**11


def check_url(url: object, field: str = "url") -> str:
    """An absolute http(s) URL."""
    if not isinstance(url, str) or not url:
        raise ValidationError(f"{field} is required (an absolute http(s) URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"{field} must be an absolute http(s) URL, got {url!r}")
    return url


def check_method(method: object) -> str:
    """An HTTP method, returned upper-cased."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    return method.upper()


def check_str_mapping(value: object, field: str) -> dict[str, str]:
    """A mapping of strings to strings (headers)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError(f"{field} must map strings to strings")
    return dict(value)


def check_mapping(value: object, field: str) -> dict[str, Any]:
    """A mapping with string keys (metadata, retry policy)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError(f"{field} must be a dict with string keys")
    return dict(value)


def check_body(body: object) -> Optional[str]:
    """A request body: a string (serialize JSON yourself) or None."""
    if body is not None and not isinstance(body, str):
        raise ValidationError(f"body must be a string (use json.dumps for JSON), got {type(body).__name__}")
    return body


def check_regions(regions: object, field: str = "regions") -> list[str]:
    """A list of region ids."""
    if not isinstance(regions, (list, tuple)) or not all(isinstance(r, str) and r for r in regions):
        raise ValidationError(f"{field} must be a list of region ids such as ['iad', 'lax']")
    return list(regions)


def check_webhooks(webhooks: object) -> list[dict[str, Any]]:
    """Webhooks: ``[{"url": ..., "regions"?: [...], "has_quorum_vote"?: bool}]``."""
    if not isinstance(webhooks, (list, tuple)):
        raise ValidationError("webhooks must be a list of dicts like {'url': 'https://...'}")
    checked = []
    for i, hook in enumerate(webhooks):
        if not isinstance(hook, Mapping):
            raise ValidationError(f"webhooks[{i}] must be a dict like {{'url': 'https://...'}}")
        unknown = set(hook) - WEBHOOK_KEYS
        if unknown:
            raise ValidationError(f"webhooks[{i}] has unknown keys {sorted(unknown)}")
        check_url(hook.get("url"), f"webhooks[{i}].url")
        if "regions" in hook:
            check_regions(hook["regions"], f"webhooks[{i}].regions")
        if not isinstance(hook.get("has_quorum_vote", True), bool):
            raise ValidationError(f"webhooks[{i}].has_quorum_vote must be a bool")
        checked.append(dict(hook))
    return checked


def check_positive_int(value: object, field: str) -> int:
    """An int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{field} must be an integer >= 1, got {value!r}")
    return value


def check_epoch_ms(value: object, field: str) -> int:
    """A Unix timestamp in milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{field} must be a Unix timestamp in milliseconds, got {value!r}")
    if value < _MIN_EPOCH_MS:
        raise ValidationError(f"{field}={value} looks like seconds; it must be in milliseconds (seconds * 1000)")
    return value


def check_choice(value: object, field: str, choices: Iterable[str]) -> str:
    """One of a few fixed strings."""
    choices = tuple(choices)
    if value not in choices:
        raise ValidationError(f"{field} must be one of {choices}, got {value!r}")
    return str(value)


def check_status_codes(codes: object, field: str) -> list[int]:
    """A list of HTTP status codes."""
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        raise ValidationError(f"{field} must be a list of HTTP status codes, got {codes!r}")
    return list(codes)


def check_retry_policy(policy: object) -> dict[str, Any]:
    """``{"max_retries", "max_reroutes", "retry_codes", "reroute_codes"}``, all optional."""
    checked = check_mapping(policy, "retry_policy")
    unknown = set(checked) - RETRY_POLICY_KEYS
    if unknown:
        raise ValidationError(f"retry_policy has unknown keys {sorted(unknown)}; known: {sorted(RETRY_POLICY_KEYS)}")
    for key in ("max_retries", "max_reroutes"):
        value = checked.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(f"retry_policy.{key} must be an integer >= 0, got {value!r}")
    for key in ("retry_codes", "reroute_codes"):
        if key in checked:
            check_status_codes(checked[key], f"retry_policy.{key}")
    return checked


def check_idempotent_key(key: object) -> str:
    """A non-empty string."""
    if not isinstance(key, str) or not key:
        raise ValidationError(f"idempotent_key must be a non-empty string, got {key!r}")
    return key


def check_flow_control(value: Mapping[str, Any]) -> dict[str, Any]:
    """``{"key", "rate"?, "parallelism"?}``: jobs of yours with the same key share that limit, on top of the domain's."""
    if not isinstance(value, Mapping) or set(value) - {"key", "rate", "parallelism"}:
        raise ValidationError(f"flow_control must be a mapping of key, rate and parallelism, got {value!r}")
    key, rate, parallelism = value.get("key"), value.get("rate"), value.get("parallelism")
    if not isinstance(key, str) or not key or len(key) > 128:
        raise ValidationError(f"flow_control key must be a non-empty string of at most 128 characters, got {key!r}")
    if rate is None and parallelism is None:
        raise ValidationError("flow_control needs a rate (requests/s) and/or a parallelism (sends at once)")
    out: dict[str, Any] = {"key": key}
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValidationError(f"flow_control rate must be a number of requests per second above 0, got {rate!r}")
        out["rate"] = rate
    if parallelism is not None:
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ValidationError(f"flow_control parallelism must be an integer of at least 1, got {parallelism!r}")
        out["parallelism"] = parallelism
    return out


def build_job_payload(
    url: str,
    method: str = "GET",
    headers: Optional[Mapping[str, str]] = None,
    body: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    webhooks: Optional[list[dict[str, Any]]] = None,
    webhook_quorum: int = 1,
    regions: Optional[list[str]] = None,
    region_policy: str = "fallback",
    execution_mode: str = "race",
    retry_policy: Optional[Mapping[str, Any]] = None,
    fallback_job: Optional[Mapping[str, Any]] = None,
    on_success: Optional[Mapping[str, Any]] = None,
    on_failure: Optional[Mapping[str, Any]] = None,
    on_failure_timeout_ms: Optional[int] = None,
    idempotent_key: Optional[str] = None,
    retry_at: Optional[int] = None,
    start_before_ms: Optional[int] = None,
    flow_control: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Check every field and return the payload for ``POST /api/v1/jobs``.

    Empty and default values are omitted; ``idempotent_key=None`` leaves the
    key to the server (HASH: a digest of the request).
    """
    payload: dict[str, Any] = {"url": check_url(url), "method": check_method(method)}
    if headers:
        payload["headers"] = check_str_mapping(headers, "headers")
    if check_body(body):
        payload["body"] = body
    if metadata:
        payload["metadata"] = check_mapping(metadata, "metadata")
    if webhooks:
        payload["webhooks"] = check_webhooks(webhooks)
    if check_positive_int(webhook_quorum, "webhook_quorum") != 1:
        payload["webhook_quorum"] = webhook_quorum
    voters = sum(1 for hook in payload.get("webhooks", ()) if hook.get("has_quorum_vote", True))
    if webhooks and webhook_quorum > voters:  # as the server checks it
        raise ValidationError(f"webhook_quorum={webhook_quorum} but only {voters} webhook(s) have a quorum vote")
    if regions:
        payload["regions"] = check_regions(regions)
    if check_choice(region_policy, "region_policy", REGION_POLICIES) != "fallback":
        payload["region_policy"] = region_policy
    if check_choice(execution_mode, "execution_mode", EXECUTION_MODES) != "race":
        payload["execution_mode"] = execution_mode
    if retry_policy:
        payload["retry_policy"] = check_retry_policy(retry_policy)
    for field, job in (
        ("fallback_job", fallback_job),
        ("on_success", on_success),
        ("on_failure", on_failure),
    ):
        if job:
            payload[field] = check_mapping(job, field)
    if on_failure_timeout_ms is not None:
        payload["on_failure_timeout_ms"] = check_positive_int(on_failure_timeout_ms, "on_failure_timeout_ms")
    if idempotent_key is not None:
        payload["idempotent_key"] = check_idempotent_key(idempotent_key)
    if retry_at is not None:
        payload["retry_at"] = check_epoch_ms(retry_at, "retry_at")
    if start_before_ms is not None:
        payload["start_before_ms"] = check_epoch_ms(start_before_ms, "start_before_ms")
        if retry_at is not None and retry_at >= start_before_ms:
            raise ValidationError(f"start_before_ms={start_before_ms} must be after retry_at={retry_at}: the job could never start")
    if flow_control is not None:
        payload["flow_control"] = check_flow_control(flow_control)
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the job payload is not JSON-serializable: {exc}") from None
    return payload

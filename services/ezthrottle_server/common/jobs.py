"""The job payload: validation and normalisation.

The payload is the published SDK's (see the SDK README): ``url``, ``method``,
``headers``, ``body``, ``metadata``, ``webhooks``, ``webhook_quorum``,
``regions``, ``region_policy``, ``execution_mode``, ``retry_policy``,
``fallback_job`` (with ``trigger``), ``on_success``, ``on_failure``,
``on_failure_timeout_ms``, ``idempotent_key``, ``retry_at``, and ``start_before_ms``
(the second round: not started by then, the job ends ``expired``); plus ``type``
(``performance``/``frugal``) on chained steps. Anything else is rejected
with a 400 that names the field, never ignored.

:func:`validate_job` returns a normalised copy: defaults filled in, the method
upper-cased, so the rest of the system reads one shape.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeGuard

import orjson
from yarl import URL

from .errors import ApiError
from .workflows import has_chain, is_frugal

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
REGION_POLICIES = ("fallback", "strict")
EXECUTION_MODES = ("race", "fanout")
STEP_TYPES = ("performance", "frugal")

DEFAULT_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "max_reroutes": 2,
    "retry_codes": [429, 503],
    "reroute_codes": [500, 502, 504],
}

# Headers the dam sets itself; a job may not override them.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # fullmatch: "$" would let a trailing "\n" through
# What the HTTP client refuses in a header value (every C0 control but TAB, and DEL): refused at the door.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

MAX_URL_LENGTH = 8192
MAX_KEY_LENGTH = 256
MAX_CHAIN_DEPTH = 16
MAX_WEBHOOKS = 10
MAX_METADATA_DEPTH = 16  # objects and arrays nested in metadata; deeper is refused (400), never a 500 from the encoder
MAX_RETRIES_CEILING = 100
MAX_REROUTES_CEILING = 20

_JOB_FIELDS = frozenset(
    {
        "url",
        "method",
        "headers",
        "body",
        "metadata",
        "webhooks",
        "webhook_quorum",
        "regions",
        "region_policy",
        "execution_mode",
        "retry_policy",
        "fallback_job",
        "on_success",
        "on_failure",
        "on_failure_timeout_ms",
        "idempotent_key",
        "retry_at",
        "flow_control",
        "start_before_ms",
        "type",
    }
)
_WEBHOOK_FIELDS = frozenset({"url", "regions", "has_quorum_vote"})
_TRIGGER_TYPES = ("on_error", "on_timeout")


def _bad(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(code, f"{field}: {message}", field=field)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(field, "must be a non-empty string")
    if len(value) > MAX_URL_LENGTH:
        raise _bad(field, f"is longer than {MAX_URL_LENGTH} characters")
    try:
        url = URL(value)
        host = url.host  # decodes IDNA: 'xn--a.com' is not a valid name (UnicodeError, a ValueError)
    except (ValueError, TypeError) as exc:
        raise _bad(field, f"is not a valid URL ({exc})") from exc
    if url.scheme not in ("http", "https"):
        raise _bad(field, f"scheme must be http or https, got {url.scheme or 'none'!r}")
    if not host:
        raise _bad(field, "has no host")
    try:
        url.port  # noqa: B018 - raises on an out-of-range port
    except ValueError as exc:
        raise _bad(field, f"has an invalid port ({exc})") from exc
    return value


def _check_codes(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or not all(_is_int(c) and 100 <= c <= 599 for c in value):
        raise _bad(field, "must be a list of HTTP status codes (100-599)")
    return list(value)


def _check_regions(value: Any, field: str, known: Collection[str]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise _bad(field, "must be a non-empty list of region ids")
    unknown = [r for r in value if r not in known]
    if unknown:
        raise _bad(field, f"unknown region(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if len(set(value)) != len(value):
        raise _bad(field, "lists a region twice")
    return list(value)


def _check_headers(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _bad(field, "must be an object of header names to string values")
    out: dict[str, str] = {}
    for name, v in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise _bad(f"{field}.{name}", "is not a valid header name")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise _bad(f"{field}.{name}", "is set by EZThrottle and cannot be overridden")
        if not isinstance(v, str):
            raise _bad(f"{field}.{name}", "must be a string")
        if _CONTROL.search(v):
            raise _bad(f"{field}.{name}", "must not contain control characters (CR, LF, NUL and the others below 0x20 but TAB, or DEL)")
        out[name] = v
    return out


def _check_retry_policy(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "must be an object")
    unknown = set(value) - set(DEFAULT_RETRY_POLICY)
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"{field}.{name}", f"unknown field; allowed: {', '.join(DEFAULT_RETRY_POLICY)}", "unknown_field")
    policy = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULT_RETRY_POLICY.items()}
    for key, ceiling in (("max_retries", MAX_RETRIES_CEILING), ("max_reroutes", MAX_REROUTES_CEILING)):
        if key in value:
            v = value[key]
            if not _is_int(v) or not 0 <= v <= ceiling:
                raise _bad(f"{field}.{key}", f"must be an integer from 0 to {ceiling}")
            policy[key] = v
    for key in ("retry_codes", "reroute_codes"):
        if key in value:
            policy[key] = _check_codes(value[key], f"{field}.{key}")
    return policy


def _check_webhooks(value: Any, field: str, known: Collection[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _bad(field, "must be a list of webhook objects")
    if len(value) > MAX_WEBHOOKS:
        raise _bad(field, f"at most {MAX_WEBHOOKS} webhooks per job")
    hooks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, hook in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(hook, dict):
            raise _bad(where, "must be an object with a 'url'")
        unknown = set(hook) - _WEBHOOK_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise _bad(f"{where}.{name}", f"unknown field; allowed: {', '.join(sorted(_WEBHOOK_FIELDS))}", "unknown_field")
        if "url" not in hook:
            raise _bad(f"{where}.url", "is required", "missing_field")
        out: dict[str, Any] = {"url": _check_url(hook["url"], f"{where}.url"), "has_quorum_vote": True}
        if out["url"] in seen:
            raise _bad(f"{where}.url", "is listed twice; each webhook URL once per job")
        seen.add(out["url"])
        if "has_quorum_vote" in hook:
            if not isinstance(hook["has_quorum_vote"], bool):
                raise _bad(f"{where}.has_quorum_vote", "must be true or false")
            out["has_quorum_vote"] = hook["has_quorum_vote"]
        if hook.get("regions") is not None:
            out["regions"] = _check_regions(hook["regions"], f"{where}.regions", known)
        hooks.append(out)
    return hooks


MAX_FLOW_KEY_LENGTH = 128
MAX_FLOW_RATE = 10_000.0
MAX_FLOW_PARALLELISM = 10_000


def _check_flow_control(value: Any, field: str) -> dict[str, Any]:
    """``{"key", "rate"?, "parallelism"?}``: a customer's own limit on top of the domain's (pacing/flow.py)."""
    if not isinstance(value, dict):
        raise _bad(field, "must be an object with a 'key' and a 'rate' and/or a 'parallelism'")
    unknown = sorted(set(value) - {"key", "rate", "parallelism"})
    if unknown:
        raise _bad(f"{field}.{unknown[0]}", "unknown field; allowed: key, parallelism, rate", "unknown_field")
    key = value.get("key")
    if not isinstance(key, str) or not key or len(key) > MAX_FLOW_KEY_LENGTH or _CONTROL.search(key):
        raise _bad(f"{field}.key", f"must be a non-empty string of at most {MAX_FLOW_KEY_LENGTH} characters, no control characters")
    out: dict[str, Any] = {"key": key}
    rate = value.get("rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_FLOW_RATE or rate != rate:
            raise _bad(f"{field}.rate", f"must be a number of requests per second above 0, at most {MAX_FLOW_RATE:g}")
        out["rate"] = float(rate)
    parallelism = value.get("parallelism")
    if parallelism is not None:
        if not _is_int(parallelism) or not 1 <= parallelism <= MAX_FLOW_PARALLELISM:
            raise _bad(f"{field}.parallelism", f"must be an integer from 1 to {MAX_FLOW_PARALLELISM}")
        out["parallelism"] = parallelism
    if rate is None and parallelism is None:
        raise _bad(field, "needs a 'rate' and/or a 'parallelism'")
    return out


def _check_trigger(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "must be an object with a 'type'")
    if value == {}:
        return {}  # the published SDK sends {} for a fallback without a trigger: always fires
    kind = value.get("type")
    if kind == "on_error":
        extra = set(value) - {"type", "codes"}
        if extra:
            raise _bad(f"{field}.{sorted(extra)[0]}", "unknown field", "unknown_field")
        return {"type": "on_error", "codes": _check_codes(value.get("codes"), f"{field}.codes")}
    if kind == "on_timeout":
        extra = set(value) - {"type", "timeout_ms"}
        if extra:
            raise _bad(f"{field}.{sorted(extra)[0]}", "unknown field", "unknown_field")
        t = value.get("timeout_ms")
        if not _is_int(t) or t <= 0:
            raise _bad(f"{field}.timeout_ms", "must be a positive integer (milliseconds)")
        return {"type": "on_timeout", "timeout_ms": t}
    raise _bad(f"{field}.type", f"must be one of {', '.join(_TRIGGER_TYPES)}")


def _depth_of(value: Any, limit: int) -> int:
    """How deep objects and arrays nest in ``value``, counted up to ``limit + 1`` at most."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    deepest = 0  # only containers are descended into: a job's leaves are most of it (18.8 -> 6.2 us a job)
    for v in value.values() if isinstance(value, dict) else value:
        if isinstance(v, dict | list):
            d = _depth_of(v, limit - 1)
            if d > deepest:
                deepest = d
    return 1 + deepest


def validate_job(
    payload: Any,
    known_regions: Collection[str],
    *,
    latest_retry_at_ms: int | None = None,
    now_ms: int | None = None,
    _path: str = "",
    _depth: int = 0,
) -> dict[str, Any]:
    """Validate a job payload and return its normalised form, or raise ApiError (400).

    ``latest_retry_at_ms``: the furthest ``retry_at`` (and ``start_before_ms``)
    accepted (now plus the operator's horizon); None accepts any. ``now_ms``:
    a ``start_before_ms`` not after it is refused; None skips that check."""
    prefix = f"{_path}." if _path else ""
    if _depth > MAX_CHAIN_DEPTH:
        raise _bad(_path, f"workflow chains are limited to {MAX_CHAIN_DEPTH} levels")
    if not isinstance(payload, dict):
        raise ApiError("invalid_request", f"{_path or 'body'}: a job must be a JSON object", field=_path or None)
    allowed = _JOB_FIELDS | ({"trigger"} if _path.endswith("fallback_job") else set())
    unknown = set(payload) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"{prefix}{name}", "unknown field", "unknown_field")
    if "url" not in payload:
        raise _bad(f"{prefix}url", "is required", "missing_field")

    job: dict[str, Any] = {"url": _check_url(payload["url"], f"{prefix}url")}

    method = payload.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad(f"{prefix}method", f"must be one of {', '.join(sorted(METHODS))}")
    job["method"] = method.upper()

    job["headers"] = _check_headers(payload["headers"], f"{prefix}headers") if payload.get("headers") is not None else {}

    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise _bad(f"{prefix}body", "must be a string (serialise JSON bodies first)")
    job["body"] = body

    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad(f"{prefix}metadata", "must be an object")
    if metadata and _depth_of(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise _bad(f"{prefix}metadata", f"nests objects and arrays more than {MAX_METADATA_DEPTH} levels deep")
    job["metadata"] = metadata or {}

    job["webhooks"] = (
        _check_webhooks(payload["webhooks"], f"{prefix}webhooks", known_regions) if payload.get("webhooks") is not None else []
    )
    quorum = payload.get("webhook_quorum", 1)
    if not _is_int(quorum) or quorum < 1:
        raise _bad(f"{prefix}webhook_quorum", "must be an integer of at least 1")
    voters = sum(1 for h in job["webhooks"] if h["has_quorum_vote"])
    if job["webhooks"] and quorum > voters:
        raise _bad(f"{prefix}webhook_quorum", f"is {quorum} but only {voters} webhook(s) have a quorum vote")
    job["webhook_quorum"] = quorum

    job["regions"] = _check_regions(payload["regions"], f"{prefix}regions", known_regions) if payload.get("regions") is not None else None

    policy = payload.get("region_policy", "fallback")
    if policy not in REGION_POLICIES:
        raise _bad(f"{prefix}region_policy", f"must be one of {', '.join(REGION_POLICIES)}")
    job["region_policy"] = policy

    mode = payload.get("execution_mode", "race")
    if mode not in EXECUTION_MODES:
        raise _bad(f"{prefix}execution_mode", f"must be one of {', '.join(EXECUTION_MODES)}")
    job["execution_mode"] = mode

    job["retry_policy"] = (
        _check_retry_policy(payload["retry_policy"], f"{prefix}retry_policy")
        if payload.get("retry_policy") is not None
        else {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULT_RETRY_POLICY.items()}
    )

    step_type = payload.get("type", "performance")
    if step_type not in STEP_TYPES:
        raise _bad(f"{prefix}type", f"must be one of {', '.join(STEP_TYPES)}")
    job["type"] = step_type
    flow = payload.get("flow_control")
    job["flow_control"] = _check_flow_control(flow, f"{prefix}flow_control") if flow is not None else None

    key = payload.get("idempotent_key")
    if key is not None:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise _bad(f"{prefix}idempotent_key", f"must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
        if _CONTROL.search(key) or "\t" in key:  # it goes out as the Idempotency-Key header
            raise _bad(f"{prefix}idempotent_key", "must not contain control characters (it is sent as the Idempotency-Key header)")
    job["idempotent_key"] = key

    retry_at = payload.get("retry_at")
    if retry_at is not None and (not _is_int(retry_at) or retry_at < 0):
        raise _bad(f"{prefix}retry_at", "must be a timestamp in milliseconds since the epoch")
    if retry_at is not None and latest_retry_at_ms is not None and retry_at > latest_retry_at_ms:
        raise _bad(f"{prefix}retry_at", f"is too far ahead: at most {latest_retry_at_ms} (the operator's horizon from now)")
    job["retry_at"] = retry_at

    # start_before_ms: the job ends 'expired' if no attempt has started by then (never sent late).
    deadline = payload.get("start_before_ms")
    if deadline is not None:
        if not _is_int(deadline) or deadline < 0:
            raise _bad(f"{prefix}start_before_ms", "must be a timestamp in milliseconds since the epoch")
        if now_ms is not None and deadline <= now_ms:
            raise _bad(f"{prefix}start_before_ms", f"is in the past (now is {now_ms})")
        if latest_retry_at_ms is not None and deadline > latest_retry_at_ms:
            raise _bad(f"{prefix}start_before_ms", f"is too far ahead: at most {latest_retry_at_ms} (the operator's horizon from now)")
        if retry_at is not None and retry_at >= deadline:
            raise _bad(f"{prefix}start_before_ms", "must be after retry_at (the job could never start)")
    job["start_before_ms"] = deadline

    timeout = payload.get("on_failure_timeout_ms")
    if timeout is not None and (not _is_int(timeout) or timeout <= 0):
        raise _bad(f"{prefix}on_failure_timeout_ms", "must be a positive integer (milliseconds)")
    job["on_failure_timeout_ms"] = timeout

    for child in ("fallback_job", "on_success", "on_failure"):
        if payload.get(child) is not None:
            job[child] = validate_job(
                payload[child],
                known_regions,
                latest_retry_at_ms=latest_retry_at_ms,
                now_ms=now_ms,
                _path=f"{prefix}{child}",
                _depth=_depth + 1,
            )
        else:
            job[child] = None
    if "trigger" in allowed:
        job["trigger"] = _check_trigger(payload.get("trigger", {}), f"{prefix}trigger")
    return job


def hash_key(customer: str, job: Mapping[str, Any]) -> str:
    """The HASH strategy's idempotent key: a digest of customer, method, url and body."""
    h = hashlib.sha256()
    for part in (customer, job["method"], job["url"], job["body"] or ""):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def key_digest(customer: str, idempotent_key: str) -> str:
    """A fixed-size digest naming an idempotent key in Redis."""
    return hashlib.sha256(f"{customer}\0{idempotent_key}".encode()).hexdigest()[:40]


UNSAFE_METHODS = frozenset({"POST", "PATCH"})


def has_header(headers: Mapping[str, str], name: str) -> bool:
    lowered = name.lower()
    return any(k.lower() == lowered for k in headers)


def unsafe_to_repeat(method: str, headers: Mapping[str, str]) -> bool:
    """POST and PATCH without the user's own Idempotency-Key may not be sent twice at once."""
    return method.upper() in UNSAFE_METHODS and not has_header(headers, "Idempotency-Key")


def record_fields(
    job: Mapping[str, Any], *, customer: str, idempotent_key: str, regions: Sequence[str], now_ms: int, **links: Any
) -> dict[str, Any]:
    """The hash of a new job (a submission or a workflow child), before the script writes it.

    ``job`` is a validated spec; ``links`` (parent, root, relation) are added
    as they are. The scripts add what only they know (``counted``).
    """
    due = job.get("retry_at") or 0
    return {
        "customer": customer,
        "spec": orjson.dumps(job),
        "state": "scheduled" if due > now_ms else "queued",
        "created_ms": now_ms,
        "idempotent_key": idempotent_key,
        "regions": ",".join(regions),
        "tried": ",".join(regions),
        "mode": job.get("execution_mode", "race"),
        "live": len(regions),
        "nregions": len(regions),
        "unsafe": 1 if unsafe_to_repeat(job["method"], job.get("headers") or {}) else 0,
        "has_webhooks": 1 if job.get("webhooks") else 0,
        "chain": 1 if has_chain(job) else 0,
        # A failure may be followed by a fallback the server runs: the webhooks wait for it (finish.lua).
        "fallback": 1 if job.get("fallback_job") and not is_frugal(job["fallback_job"]) else 0,
        "reroutes": 0,
        **({"start_before_ms": job["start_before_ms"]} if job.get("start_before_ms") else {}),
        **links,
    }

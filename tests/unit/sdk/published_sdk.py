"""Drive an ezthrottle SDK from JSON on stdin; print the answer as JSON.

Run inside the virtualenv of the published ``ezthrottle==1.3.0`` by the
parity tests; they also load it with ``runpy`` to run the very same builder
calls against our SDK. Requests: ``{"mode": "payloads" | "verify" |
"try_secrets" | "sign" | "client", "data": ...}``.
"""

import hashlib
import hmac
import json
import sys

from ezthrottle import (
    IdempotentStrategy,
    Step,
    StepType,
    try_verify_with_secrets,
    verify_webhook_signature,
)

ENUMS = {"StepType": StepType, "IdempotentStrategy": IdempotentStrategy}


def resolve(value):
    """``{"$step": calls}`` -> a Step, ``{"$enum": "StepType.FRUGAL"}`` -> the member."""
    if isinstance(value, dict) and "$step" in value:
        return build_step(value["$step"])
    if isinstance(value, dict) and "$enum" in value:
        enum_name, member = value["$enum"].split(".")
        return getattr(ENUMS[enum_name], member)
    return value


def build_step(calls):
    """Apply ``[[method, args, kwargs], ...]`` to a fresh Step."""
    step = Step()
    for name, args, kwargs in calls:
        getattr(step, name)(*map(resolve, args), **{k: resolve(v) for k, v in kwargs.items()})
    return step


def payloads(scenarios):
    return {name: build_step(calls)._build_job_payload() for name, calls in scenarios.items()}


def verify(cases):
    return [
        list(
            verify_webhook_signature(
                c["payload"].encode(), c["header"], c["secret"], c["tolerance"]
            )
        )
        for c in cases
    ]


def try_secrets(cases):
    return [
        list(
            try_verify_with_secrets(
                c["payload"].encode(), c["header"], c["primary"], c["secondary"]
            )
        )
        for c in cases
    ]


def sign(cases):
    """Signature headers computed here with hmac, independently of any SDK."""
    headers = []
    for c in cases:
        message = f"{c['timestamp']}.{c['payload']}".encode()
        digest = hmac.new(c["secret"].encode(), message, hashlib.sha256).hexdigest()
        headers.append(f"t={c['timestamp']},v1={digest}")
    return headers


def client(data):
    """Run client calls against a server: ``{"api_key", "url", "calls": [[method, kwargs], ...]}``.

    Each call answers ``{"ok": result}`` or ``{"error": {"type", "message", "retry_at"}}``.
    ``url`` is given as both ``tracktags_url`` and ``ezthrottle_url``, as a user
    moving to a self-hosted edge does.
    """
    from ezthrottle import EZThrottle

    sdk = EZThrottle(data["api_key"], tracktags_url=data["url"], ezthrottle_url=data["url"])
    results = []
    for method, kwargs in data["calls"]:
        try:
            results.append({"ok": getattr(sdk, method)(**kwargs)})
        except Exception as exc:
            results.append(
                {
                    "error": {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "retry_at": getattr(exc, "retry_at", None),
                    }
                }
            )
    return results


HANDLERS = {
    "payloads": payloads,
    "verify": verify,
    "try_secrets": try_secrets,
    "sign": sign,
    "client": client,
}


if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(HANDLERS[request["mode"]](request["data"]), sys.stdout)

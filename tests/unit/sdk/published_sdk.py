"""Drive an ezthrottle SDK from JSON on stdin; print the answer as JSON.

Run inside the virtualenv of the published ``ezthrottle==1.3.0`` by the
parity tests; they also load it with ``runpy`` to run the very same builder
calls against our SDK. Requests: ``{"mode": "payloads" | "verify" |
"try_secrets" | "sign", "data": ...}``.
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


HANDLERS = {"payloads": payloads, "verify": verify, "try_secrets": try_secrets, "sign": sign}


if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(HANDLERS[request["mode"]](request["data"]), sys.stdout)

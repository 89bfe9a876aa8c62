"""Drive an ezthrottle SDK from JSON on stdin; print the answer as JSON.

Run inside the virtualenv of the published ``ezthrottle==1.3.0`` by the
parity tests; they also load it with ``runpy`` to run the very same builder
calls against our SDK. Requests: ``{"mode": "payloads" | "verify" |
"try_secrets" | "sign" | "client" | "steps" | "signatures", "data": ...}``.
"""

import hashlib
import hmac
import importlib
import inspect
import json
import sys
from enum import Enum

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
    return [list(verify_webhook_signature(c["payload"].encode(), c["header"], c["secret"], c["tolerance"])) for c in cases]


def try_secrets(cases):
    return [list(try_verify_with_secrets(c["payload"].encode(), c["header"], c["primary"], c["secondary"])) for c in cases]


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


def steps(data):
    """Execute steps with a client against a server, as a user's code does.

    ``{"api_key", "url", "runs": [...]}``; each run is ``{"step": calls}``
    (built as in :func:`build_step`, then ``.execute(client)``) or
    ``{"auto_forward": kwargs}`` (a function decorated with
    ``@auto_forward(client)`` raises ``ForwardToEZThrottle(**kwargs)``), or
    ``{"sleep_s": seconds}`` (a pause, answered ``{"ok": None}``).
    Each run answers like a call of :func:`client`.
    """
    import time

    from ezthrottle import EZThrottle, ForwardToEZThrottle, auto_forward

    sdk = EZThrottle(data["api_key"], tracktags_url=data["url"], ezthrottle_url=data["url"])
    results = []
    for run in data["runs"]:
        try:
            if "sleep_s" in run:
                time.sleep(run["sleep_s"])
                results.append({"ok": None})
            elif "auto_forward" in run:

                @auto_forward(sdk)
                def legacy_call(kwargs=run["auto_forward"]):
                    raise ForwardToEZThrottle(**kwargs)

                results.append({"ok": legacy_call()})
            else:
                results.append({"ok": build_step(run["step"]).execute(sdk)})
        except Exception as exc:
            results.append({"error": {"type": type(exc).__name__, "message": str(exc)}})
    return results


def _params(func):
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return [
        {
            "name": p.name,
            "kind": p.kind.name,
            "has_default": p.default is not p.empty,
            "default": None if p.default is p.empty else repr(p.default),
        }
        for p in signature.parameters.values()
    ]


def _own(obj):
    return getattr(obj, "__module__", "").split(".")[0] == "ezthrottle"


def _describe(obj):
    if inspect.isclass(obj):
        methods = {}
        for name in dir(obj):
            if name.startswith("_") and name != "__init__":
                continue
            owner = next((k for k in obj.__mro__ if name in vars(k)), None)
            member = getattr(obj, name)
            if owner is None or not _own(owner) or not inspect.isfunction(member):
                continue  # inherited from object, Exception, Enum...
            methods[name] = _params(member)
        out = {
            "kind": "class",
            "ancestors": [k.__name__ for k in obj.__mro__ if _own(k)],
            "is_exception": issubclass(obj, BaseException),
            "methods": methods,
        }
        if issubclass(obj, Enum):
            out["enum"] = {m.name: m.value for m in obj}
        return out
    if callable(obj):
        return {"kind": "function", "params": _params(obj)}
    return {"kind": "value"}


def signatures(modules):
    """The public names of each module, with their signatures (run in either virtualenv)."""
    out = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) if module_name == "ezthrottle" else None
        if names is None:
            names = [
                n for n in vars(module)
                if not n.startswith("_") and _own(getattr(module, n))
                and (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
            ]  # fmt: skip
        out[module_name] = {n: _describe(getattr(module, n)) for n in names}
        if hasattr(module, "__version__"):
            out[module_name]["__version__"] = {"kind": "value"}
    return out


HANDLERS = {
    "payloads": payloads,
    "verify": verify,
    "try_secrets": try_secrets,
    "sign": sign,
    "client": client,
    "steps": steps,
    "signatures": signatures,
}


if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(HANDLERS[request["mode"]](request["data"]), sys.stdout)

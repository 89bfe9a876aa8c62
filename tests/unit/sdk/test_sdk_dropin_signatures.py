"""A drop-in at the Python level: every public name of ezthrottle 1.3.0, with a compatible signature.

``inspect`` runs inside the published SDK's virtualenv and here, through the
same function (``published_sdk.signatures``); the test compares the dumps.
Compatible means every call that is valid against 1.3.0 is valid against
ours: the same positional parameters in the same places, every keyword
accepted, the same defaults (a few listed below on purpose), and anything we
add optional.

Not compared: ``ezthrottle.webhook`` / ``ezthrottle.event_store`` (1.3.0's
embedded Flask/FastAPI webhook server, replaced by ``WebhookHandler`` and
``ezthrottle.adapters``; the constructor still accepts its options) and
``ezthrottle.init`` (an unused leftover of 0.1.0).
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(600)  # the first run installs the published SDK

MODULES = [
    "ezthrottle",
    "ezthrottle.client",
    "ezthrottle.exceptions",
    "ezthrottle.step",
    "ezthrottle.webhook_utils",
]
# Defaults that differ on purpose: (name, method, parameter) -> why.
DIFFERENT_DEFAULTS = {
    ("EZThrottle", "__init__", "tracktags_url"): "hosted URL; None: $EZTHROTTLE_URL",
    ("EZThrottle", "__init__", "ezthrottle_url"): "hosted URL; None: $EZTHROTTLE_URL",
}
MUST_COVER = {
    "EZThrottle": {
        "submit_job", "request", "queue_request", "queue_and_wait", "forward_or_fallback",
        "create_webhook_secret", "get_webhook_secret", "delete_webhook_secret",
        "rotate_webhook_secret", "__init__",
    },
    "Step": {
        "description", "response_description", "get_execution_history", "execution_trace",
        "get_description", "get_response_description", "url", "method", "headers", "body",
        "metadata", "type", "webhooks", "webhook_quorum", "regions", "region_policy",
        "execution_mode", "retry_policy", "retry_at", "idempotent_key", "idempotent_strategy",
        "fallback_on_error", "local_timeout", "fallback", "on_success", "on_failure", "execute",
    },
}  # fmt: skip
EXCEPTIONS = {"EZThrottleError", "TimeoutError", "AuthenticationError", "ForwardToEZThrottle",
              "QuotaExceededError", "WebhookVerificationError"}  # fmt: skip


@pytest.fixture(scope="module")
def theirs(published: Any) -> dict[str, Any]:
    return published.run({"mode": "signatures", "data": MODULES})  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    script = runpy.run_path(str(Path(__file__).with_name("published_sdk.py")))
    return script["signatures"](MODULES)  # type: ignore[no-any-return]


def incompatibilities(theirs: list[dict[str, Any]] | None, ours: list[dict[str, Any]] | None, where: tuple[str, ...]) -> list[str]:
    """Why a call valid against ``theirs`` could fail against ``ours`` (empty: compatible)."""
    if theirs is None:
        return []  # not introspectable (a builtin): nothing to promise
    if ours is None:
        return [f"{where}: ours is not introspectable"]
    problems = []
    positional = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
    ours_by_name = {p["name"]: p for p in ours}
    ours_var_kw = any(p["kind"] == "VAR_KEYWORD" for p in ours)
    ours_var_pos = any(p["kind"] == "VAR_POSITIONAL" for p in ours)
    their_positional = [p for p in theirs if p["kind"] in positional]
    our_positional = [p for p in ours if p["kind"] in positional]
    for i, param in enumerate(their_positional):
        if i >= len(our_positional):
            if not ours_var_pos:
                problems.append(f"{where}: positional #{i} {param['name']!r} is missing")
            continue
        if our_positional[i]["name"] != param["name"]:
            problems.append(f"{where}: positional #{i} is {our_positional[i]['name']!r}, not {param['name']!r}")
    for param in theirs:
        name = param["name"]
        if param["kind"] == "VAR_POSITIONAL":
            if not ours_var_pos:
                problems.append(f"{where}: *{name} is missing")
            continue
        if param["kind"] == "VAR_KEYWORD":
            if not ours_var_kw:
                problems.append(f"{where}: **{name} is missing")
            continue
        mine = ours_by_name.get(name)
        if mine is None:
            if not ours_var_kw:
                problems.append(f"{where}: parameter {name!r} is missing")
            continue
        if param["kind"] != "POSITIONAL_ONLY" and mine["kind"] == "POSITIONAL_ONLY":
            problems.append(f"{where}: {name!r} cannot be passed by keyword")
        if param["has_default"]:
            if not mine["has_default"]:
                problems.append(f"{where}: {name!r} lost its default")
            elif mine["default"] != param["default"] and (*where[1:], name) not in DIFFERENT_DEFAULTS:
                problems.append(f"{where}: {name!r} defaults to {mine['default']}, not {param['default']}")
    their_names = {p["name"] for p in theirs}
    for param in ours:
        added = param["name"] not in their_names and param["kind"] in (*positional, "KEYWORD_ONLY")
        if added and not param["has_default"]:
            problems.append(f"{where}: our added parameter {param['name']!r} is required")
    return problems


def test_every_public_name_exists_with_a_compatible_signature(theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    problems: list[str] = []
    for module, names in theirs.items():
        for name, their in names.items():
            where = (module, name)
            mine = ours.get(module, {}).get(name)
            if mine is None:
                problems.append(f"{module}.{name} is missing")
                continue
            if mine["kind"] != their["kind"]:
                problems.append(f"{module}.{name} is a {mine['kind']}, not a {their['kind']}")
                continue
            if their["kind"] == "function":
                problems += incompatibilities(their["params"], mine["params"], where)
            if their["kind"] != "class":
                continue
            missing_ancestors = set(their["ancestors"]) - set(mine["ancestors"])
            if missing_ancestors:
                problems.append(f"{module}.{name} does not derive from {sorted(missing_ancestors)}")
            for member, value in their.get("enum", {}).items():
                if mine.get("enum", {}).get(member) != value:
                    problems.append(f"{module}.{name}.{member} is not {value!r}")
            for method, params in their["methods"].items():
                if method not in mine["methods"]:
                    problems.append(f"{module}.{name}.{method} is missing")
                    continue
                problems += incompatibilities(params, mine["methods"][method], (*where, method))
    assert problems == []


def test_the_comparison_covers_what_the_issue_names(theirs: dict[str, Any]) -> None:
    """A guard on the dump itself: a filter bug must not make the test above vacuous."""
    top = theirs["ezthrottle"]
    for cls, methods in MUST_COVER.items():
        assert set(top[cls]["methods"]) >= methods, cls
    found = {n for names in theirs.values() for n, d in names.items() if d.get("is_exception")}
    assert found == EXCEPTIONS
    assert theirs["ezthrottle"]["auto_forward"]["params"][0]["name"] == "client"


def test_the_comparison_catches_incompatible_signatures() -> None:
    def p(name: str, kind: str = "POSITIONAL_OR_KEYWORD", default: str | None = None) -> dict[str, Any]:
        return {"name": name, "kind": kind, "has_default": default is not None, "default": default}

    theirs = [p("self"), p("url"), p("timeout", default="300")]
    assert incompatibilities(theirs, [p("self"), p("url"), p("timeout", default="300"), p("x", "KEYWORD_ONLY", "None")], ()) == []
    assert incompatibilities(theirs, [p("self"), p("target"), p("timeout", default="300")], ())
    assert incompatibilities(theirs, [p("self"), p("url"), p("timeout", "KEYWORD_ONLY", "300")], ())
    assert incompatibilities(theirs, [p("self"), p("url"), p("timeout", default="30")], ())
    assert incompatibilities(theirs, [p("self"), p("url"), p("timeout", default="300"), p("new")], ())
    assert incompatibilities([p("self"), p("kw", "VAR_KEYWORD")], [p("self")], ())


def test_every_exception_takes_a_message_and_keeps_retry_at() -> None:
    import ezthrottle
    from ezthrottle import exceptions

    for name in EXCEPTIONS:
        cls = getattr(exceptions, name, None) or getattr(ezthrottle, name)
        error = cls("message")
        assert str(error) == "message" and isinstance(error, ezthrottle.EZThrottleError)
    assert exceptions.QuotaExceededError("m", 123).retry_at == 123
    assert issubclass(exceptions.TimeoutError, exceptions.EZThrottleError)

"""Workflow chains: which step follows a job, as pure rules (no I/O).

A job's spec may carry ``fallback_job`` (with a ``trigger``), ``on_success``,
``on_failure`` and ``on_failure_timeout_ms``. When the job reaches its final
outcome exactly one *continuation* follows:

- success → ``on_success``;
- failure → the ``fallback_job`` if its trigger matches (``{}`` always;
  ``on_error`` when the final status code is in its codes; ``on_timeout`` when
  the job failed by timing out), else ``on_failure``;
- a trigger that does not match, and no ``on_failure``, ends the chain with
  the job's outcome.

A fallback stands in for its parent: it inherits the parent's ``on_success``
and ``on_failure`` unless it has its own, so ``primary.fallback(backup)
.on_success(notify)`` notifies after whichever of the two succeeded. Its own
nested ``fallback_job`` is the next fallback of the chain.

Two timers may fire a continuation early (the coordinator's timers):
- ``on_failure_timeout_ms``: if the job has not succeeded by then,
  ``on_failure`` fires once; a late success is recorded but fires nothing.
- a fallback whose trigger is ``{"type": "on_timeout", "timeout_ms": N}``:
  if the job is not final N ms after it was created, the fallback starts.
Whichever continuation is claimed first (atomically, on the parent) is the
only one. A cancelled job claims ``cancelled``: nothing follows it. A job's
``start_before_ms`` waits as a third timer (``deadline``), which ends the job
``expired`` if no attempt has started by then; an expired job's chain goes on
as a failure's. FRUGAL steps are never executed by the server: they travel to the
client in the webhook payload (``frugal_step``) and run there, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUCCESS, FAILED, CANCELLED, EXPIRED = "success", "failed", "cancelled", "expired"
FINAL_STATES = frozenset({SUCCESS, FAILED, CANCELLED, EXPIRED})
ON_SUCCESS, ON_FAILURE, FALLBACK = "on_success", "on_failure", "fallback"
FAILURE_TIMER, FALLBACK_TIMER = "failure_timeout", "fallback_timeout"
DEADLINE_TIMER = "deadline"  # start_before_ms: the job ends expired if not started by then (cancel.lua)
RELATIONS = (ON_SUCCESS, ON_FAILURE, FALLBACK)


def has_chain(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("fallback_job") or spec.get("on_success") or spec.get("on_failure"))


def _as_child(fallback: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """A fallback ready to run: its trigger dropped, the parent's continuation inherited."""
    child = {k: v for k, v in fallback.items() if k != "trigger"}
    for relation in (ON_SUCCESS, ON_FAILURE):
        if not child.get(relation) and parent.get(relation):
            child[relation] = parent[relation]
    return child


def _trigger_matches(trigger: dict[str, Any], status_code: int | None, reason: str | None) -> bool:
    if not trigger:
        return True
    if trigger.get("type") == "on_error":
        return status_code is not None and status_code in trigger.get("codes", [])
    if trigger.get("type") == "on_timeout":
        return reason == "timeout"
    return False


def next_step(spec: dict[str, Any], state: str, status_code: int | None, reason: str | None) -> tuple[str, dict[str, Any]] | None:
    """The continuation after a final outcome: (relation, child spec), or None.

    A cancelled job's chain stops there; an expired one goes on as a failure."""
    if state == CANCELLED:
        return None
    if state == SUCCESS:
        return (ON_SUCCESS, spec[ON_SUCCESS]) if spec.get(ON_SUCCESS) else None
    fallback = spec.get("fallback_job")
    if fallback and _trigger_matches(fallback.get("trigger") or {}, status_code, reason):
        return FALLBACK, _as_child(fallback, spec)
    return (ON_FAILURE, spec[ON_FAILURE]) if spec.get(ON_FAILURE) else None


def timer_step(spec: dict[str, Any], timer: str) -> tuple[str, dict[str, Any]] | None:
    """The continuation a timer fires (if the job's state still calls for it)."""
    if timer == FAILURE_TIMER and spec.get(ON_FAILURE):
        return ON_FAILURE, spec[ON_FAILURE]
    fallback = spec.get("fallback_job")
    if timer == FALLBACK_TIMER and fallback and (fallback.get("trigger") or {}).get("type") == "on_timeout":
        return FALLBACK, _as_child(fallback, spec)
    return None


def timers_for(spec: dict[str, Any], created_ms: int) -> list[tuple[int, str]]:
    """(due ms, timer kind) for the timers a job needs from its creation."""
    out: list[tuple[int, str]] = []
    if spec.get("on_failure_timeout_ms") and spec.get(ON_FAILURE):
        out.append((created_ms + int(spec["on_failure_timeout_ms"]), FAILURE_TIMER))
    fallback = spec.get("fallback_job")
    trigger = (fallback or {}).get("trigger") or {}
    if trigger.get("type") == "on_timeout":
        out.append((created_ms + int(trigger["timeout_ms"]), FALLBACK_TIMER))
    if spec.get("start_before_ms"):
        out.append((int(spec["start_before_ms"]), DEADLINE_TIMER))
    return out


def is_frugal(step: dict[str, Any]) -> bool:
    return step.get("type") == "frugal"


def frugal_step(job_id: str, spec: dict[str, Any], state: str, status_code: int | None, reason: str | None) -> dict[str, Any] | None:
    """The FRUGAL continuation that travels to the client in the webhook payload, if any."""
    step = next_step(spec, state, status_code, reason)
    if step is None or not is_frugal(step[1]):
        return None
    relation, child = step
    return {"step_id": f"{job_id}:{relation}", "relation": relation, "step": child}

"""``WebhookHandler``: receive EZThrottle webhooks and run the FRUGAL steps they carry.

The server never executes a FRUGAL step chained to a job (``on_success``,
``on_failure`` or a ``fallback``). When the job finishes and the step its
outcome selects is FRUGAL, the webhook payload carries it::

    "workflow": {"root_job_id": "...", "job_id": "...",
                 "frugal_steps": [{"step_id": "<job_id>:<relation>",
                                   "relation": "on_success" | "on_failure" | "fallback",
                                   "step": <the step's job payload>}]}

The handler is framework-agnostic: raw body and headers in, a
``WebhookResult`` out. For each request it

1. verifies ``X-EZThrottle-Signature`` first (``WebhookVerificationError``,
   answer 401), then parses the JSON (``ValidationError``, answer 400);
2. claims each FRUGAL step through the server
   (``POST /api/v1/jobs/{job_id}/frugal-claims/{step_id}``): webhooks are
   delivered at least once, to several URLs, so only the one claim that wins
   runs the step; the others report it as ``already_claimed``;
3. runs the claimed step as ``Step.execute()`` does: locally first, its FRUGAL
   fallbacks locally, then forwarded to EZThrottle on ``fallback_on_error``
   codes or network errors; its own chain continues (FRUGAL children locally,
   PERFORMANCE children submitted).

A step runs at most once. If this process dies between the claim and the
end of the step, the step is not retried by a later delivery (it is
claimed); a failure while running it (say, EZThrottle unreachable when
forwarding) is reported in ``StepRun.error`` and logged, and the webhook is
still answered 200, since a redelivery could not run it again anyway.
Failing to *claim* (the server unreachable) raises, so the delivery is
retried and the step runs then.

Framework glue lives in ``ezthrottle.adapters`` (aiohttp, FastAPI, Flask);
those modules import their framework, this one never does.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from .exceptions import EZThrottleError, ValidationError, WebhookVerificationError
from .step import Step
from .webhooks import DEFAULT_TOLERANCE_S, SIGNATURE_HEADER, try_verify_with_secrets

__all__ = ["WebhookHandler", "WebhookResult", "StepRun", "RELATIONS"]

log = logging.getLogger("ezthrottle")

RELATIONS = ("on_success", "on_failure", "fallback")


@dataclass(frozen=True)
class StepRun:
    """What became of one FRUGAL step of a webhook."""

    step_id: str
    relation: str
    status: str  # "ran", "already_claimed" or "error"
    result: Optional[dict[str, Any]] = None  # Step.execute()'s result when it ran
    error: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step_id": self.step_id, "relation": self.relation, "status": self.status}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class WebhookResult:
    """A verified webhook: its payload and what the handler did with its FRUGAL steps."""

    payload: dict[str, Any]
    verified_with: str  # "valid_primary" or "valid_secondary"
    steps: tuple[StepRun, ...] = field(default=())

    @property
    def job_id(self) -> Optional[str]:
        return self.payload.get("job_id")

    @property
    def status(self) -> Optional[str]:
        return self.payload.get("status")

    @property
    def response(self) -> Optional[dict[str, Any]]:
        return self.payload.get("response")

    def response_body(self) -> dict[str, Any]:
        """What an adapter answers the delivery with (HTTP 200)."""
        return {"ok": True, "job_id": self.job_id, "steps": [s.as_dict() for s in self.steps]}


@dataclass(frozen=True)
class _PendingStep:
    job_id: str
    step_id: str
    relation: str
    payload: dict[str, Any]


class WebhookHandler:
    """Verify, parse and continue the workflow of EZThrottle webhooks.

    ``client`` is an ``EZThrottle`` for ``handle()`` or an ``AsyncEZThrottle``
    for ``await handle_async()``; it claims and runs the FRUGAL steps.
    ``secret`` (and ``secondary_secret`` during a rotation) are the webhook
    secrets set with ``client.create_webhook_secret()``.
    """

    def __init__(
        self,
        client: Any,
        secret: str,
        secondary_secret: Optional[str] = None,
        *,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
    ) -> None:
        if not isinstance(secret, str) or not secret:
            raise ValidationError("WebhookHandler needs the webhook secret: secret=...")
        self.client = client
        self._secret = secret
        self._secondary_secret = secondary_secret
        self.tolerance_s = tolerance_s

    def __repr__(self) -> str:
        return f"<WebhookHandler client={self.client!r} secret=****>"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(getattr(self.client, "submit_job", None))

    # -- the I/O-free half ---------------------------------------------------------

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> tuple[dict[str, Any], str]:
        """Check the signature, then parse: ``(payload, "valid_primary" | "valid_secondary")``."""
        signature = _header(headers, SIGNATURE_HEADER)
        verified, reason = try_verify_with_secrets(raw_body, signature, self._secret, self._secondary_secret, self.tolerance_s)
        if not verified:
            raise WebhookVerificationError(f"Webhook signature verification failed: {reason}", reason=reason)
        try:
            payload = json.loads(raw_body)
        except ValueError as exc:
            raise ValidationError(f"the webhook body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ValidationError("the webhook body must be a JSON object")
        return payload, reason

    @staticmethod
    def frugal_steps(payload: Mapping[str, Any]) -> list[_PendingStep]:
        """The FRUGAL steps a webhook payload hands to this SDK, checked."""
        workflow = payload.get("workflow")
        if workflow is None:
            return []
        if not isinstance(workflow, Mapping):
            raise ValidationError("workflow must be an object")
        steps = workflow.get("frugal_steps") or []
        if not isinstance(steps, list):
            raise ValidationError("workflow.frugal_steps must be a list")
        job_id = workflow.get("job_id") or payload.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise ValidationError("workflow.job_id is required with frugal_steps")
        pending = []
        for i, item in enumerate(steps):
            where = f"workflow.frugal_steps[{i}]"
            if not isinstance(item, Mapping):
                raise ValidationError(f"{where} must be an object")
            step_id, relation, step = item.get("step_id"), item.get("relation"), item.get("step")
            if not isinstance(step_id, str) or not step_id:
                raise ValidationError(f"{where}.step_id must be a non-empty string")
            if relation not in RELATIONS:
                raise ValidationError(f"{where}.relation must be one of {', '.join(RELATIONS)}")
            if not isinstance(step, Mapping):
                raise ValidationError(f"{where}.step must be a job payload")
            pending.append(_PendingStep(job_id, step_id, str(relation), dict(step)))
        return pending

    # -- sync ----------------------------------------------------------------------

    def handle(self, raw_body: bytes, headers: Mapping[str, str]) -> WebhookResult:
        """Verify, parse, and run the FRUGAL steps (sync client)."""
        if self.is_async:
            raise TypeError("this handler has an AsyncEZThrottle client: use await handle_async()")
        payload, verified_with = self.verify(raw_body, headers)
        runs = []
        for pending in self.frugal_steps(payload):
            if not self.client.claim_frugal_step(pending.job_id, pending.step_id):
                runs.append(StepRun(pending.step_id, pending.relation, "already_claimed"))
                continue
            try:
                step = Step.from_payload(pending.payload, self.client)
                runs.append(StepRun(pending.step_id, pending.relation, "ran", step.execute()))
            except (EZThrottleError, ValueError) as exc:
                runs.append(_failed(pending, exc))
        return WebhookResult(payload, verified_with, tuple(runs))

    # -- async ---------------------------------------------------------------------

    async def handle_async(self, raw_body: bytes, headers: Mapping[str, str]) -> WebhookResult:
        """Verify, parse, and run the FRUGAL steps (``AsyncEZThrottle`` client)."""
        if not self.is_async:
            raise TypeError("this handler has a sync EZThrottle client: use handle()")
        payload, verified_with = self.verify(raw_body, headers)
        runs = []
        for pending in self.frugal_steps(payload):
            if not await self.client.claim_frugal_step(pending.job_id, pending.step_id):
                runs.append(StepRun(pending.step_id, pending.relation, "already_claimed"))
                continue
            try:
                step = Step.from_payload(pending.payload, self.client)
                result = await step.execute_async()
                runs.append(StepRun(pending.step_id, pending.relation, "ran", result))
            except (EZThrottleError, ValueError) as exc:
                runs.append(_failed(pending, exc))
        return WebhookResult(payload, verified_with, tuple(runs))


def _failed(pending: _PendingStep, exc: Exception) -> StepRun:
    log.warning("FRUGAL step %s (claimed) failed: %s; it will not be run again", pending.step_id, exc)
    return StepRun(pending.step_id, pending.relation, "error", error=f"{type(exc).__name__}: {exc}")


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    """A header from any mapping (case-insensitive or not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None

"""``Step``: a fluent builder for one job and the workflow around it.

A Step builds its payload without touching the network. ``execute()`` (sync
client) or ``await execute_async()`` (async client) runs it:

- PERFORMANCE submits the job to EZThrottle.
- FRUGAL sends the request from this process first. On success it returns
  the response; on a ``fallback_on_error`` code or a network error it tries
  the matching FRUGAL fallbacks locally, then forwards the job to EZThrottle;
  on any other error it returns the failure. Chained steps run locally.

The run is written once, as a flow (``_flow.py``, like httpx's
``Auth.auth_flow``): it yields what to do next (send locally, submit) and
receives the outcome. ``execute()`` performs the effects with a sync
client, ``execute_async()`` awaits them with an async one, so both share
every decision.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Union, cast

from . import _flow
from . import _payload as check
from .exceptions import (  # EZThrottleError, ForwardToEZThrottle: importable here as in 1.x
    DEFAULT_FORWARD_CODES,
    ConnectionError,
    EZThrottleError,
    ForwardToEZThrottle,
    TimeoutError,
    ValidationError,
)

__all__ = ["Step", "StepType", "IdempotentStrategy", "EZThrottleError", "ForwardToEZThrottle"]

_TRACE_RESPONSE_CHARS = 200
# Payload fields that ``from_payload`` hands to the setter of the same name,
# in this order; it skips a null, and an empty value of those in _EMPTY_IS_UNSET.
_SETTER_FIELDS = [
    "type",
    "headers",
    "body",
    "metadata",
    "webhooks",
    "webhook_quorum",
    "regions",
    "region_policy",
    "execution_mode",
    "retry_policy",
    "retry_at",
    "idempotent_key",
]
_EMPTY_IS_UNSET = frozenset({"headers", "metadata", "webhooks", "regions", "retry_policy"})


class StepType(Enum):
    """Where a step runs first."""

    FRUGAL = "frugal"  # in this process; forwarded to EZThrottle on error
    PERFORMANCE = "performance"  # on EZThrottle, at once


class IdempotentStrategy(Enum):
    """How a job without a custom key is deduplicated."""

    HASH = "hash"  # the server hashes the request: the same request runs once
    UNIQUE = "unique"  # the SDK sends a fresh uuid4: every submission runs


@dataclass(frozen=True)
class _SendLocally:
    """Send the step's request from this process; the outcome is the ``httpx.Response``."""

    step: Step

    def call(self, client: Any) -> Any:
        step = self.step
        args = (step._url, step._method, step._headers or None, step._body)
        return client.request(*args, timeout_s=step._local_timeout_s)


@dataclass(frozen=True)
class _Submit:
    """Submit the job; the outcome is the server's answer."""

    payload: dict[str, Any]

    def call(self, client: Any) -> Any:
        return client._run(client._submit_payload(self.payload))


@dataclass(frozen=True)
class _LocalOutcome:
    status_code: Optional[int] = None  # None when no response arrived
    text: str = ""
    error: Optional[str] = None
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_Flow = _flow.Flow[dict[str, Any]]
_ChainFlow = _flow.Flow[None]  # (in Step's body, ``_flow`` is its method)


class Step:
    """Fluent builder for an EZThrottle job; every setter returns the step.

    Example::

        result = (
            Step(client)
            .url("https://api.example.com/charges")
            .method("POST")
            .webhooks([{"url": "https://app.example.com/webhook"}])
            .execute()
        )
    """

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self._step_type = StepType.PERFORMANCE
        self._url: Optional[str] = None
        self._method = "GET"
        self._headers: dict[str, str] = {}
        self._body: Optional[str] = None
        self._metadata: dict[str, Any] = {}
        self._webhooks: list[dict[str, Any]] = []
        self._webhook_quorum = 1
        self._regions: Optional[list[str]] = None
        self._region_policy = "fallback"
        self._execution_mode = "race"
        self._retry_policy: Optional[dict[str, Any]] = None
        self._retry_at: Optional[int] = None
        self._start_before_ms: Optional[int] = None
        self._flow_control: Optional[dict[str, Any]] = None
        self._idempotent_key: Optional[str] = None
        self._idempotent_strategy = IdempotentStrategy.HASH
        self._fallback_on_error = list(DEFAULT_FORWARD_CODES)
        self._local_timeout_s: float = 30
        self._fallbacks: list[tuple[Step, dict[str, Any]]] = []
        self._on_success: Optional[Step] = None
        self._on_failure: Optional[Step] = None
        self._on_failure_timeout_ms: Optional[int] = None
        self._description: Optional[str] = None
        self._response_description: Optional[str] = None
        self._history: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"<Step {self._step_type.value} {self._method} {self._url}>"

    # -- the request ---------------------------------------------------------

    def url(self, url: str) -> Step:
        """Target URL (absolute http or https)."""
        self._url = check.check_url(url)
        return self

    def method(self, method: str) -> Step:
        """HTTP method; upper-cased."""
        self._method = check.check_method(method)
        return self

    def headers(self, headers: dict[str, str]) -> Step:
        """Request headers."""
        self._headers = check.check_str_mapping(headers, "headers")
        return self

    def body(self, body: str) -> Step:
        """Request body, as a string."""
        self._body = check.check_body(body)
        return self

    def metadata(self, metadata: dict[str, Any]) -> Step:
        """Data echoed back in the webhook payload."""
        self._metadata = check.check_mapping(metadata, "metadata")
        return self

    # -- how EZThrottle runs it ----------------------------------------------

    def type(self, step_type: Union[StepType, str]) -> Step:
        """``StepType.PERFORMANCE`` (default) or ``StepType.FRUGAL``."""
        self._step_type = _enum(StepType, step_type, "step type")
        return self

    def webhooks(self, webhooks: list[dict[str, Any]]) -> Step:
        """Where results go: ``[{"url", "regions"?, "has_quorum_vote"?}]``."""
        self._webhooks = check.check_webhooks(webhooks)
        return self

    def webhook_quorum(self, quorum: int) -> Step:
        """How many voting webhooks must receive the result (default 1)."""
        self._webhook_quorum = check.check_positive_int(quorum, "webhook_quorum")
        return self

    def regions(self, regions: list[str]) -> Step:
        """Regions to run in, e.g. ``["iad", "lax", "ord"]``."""
        self._regions = check.check_regions(regions)
        return self

    def region_policy(self, policy: str) -> Step:
        """``"fallback"`` (default: reroute around a down region) or ``"strict"``."""
        self._region_policy = check.check_choice(policy, "region_policy", check.REGION_POLICIES)
        return self

    def execution_mode(self, mode: str) -> Step:
        """``"race"`` (default: first region wins) or ``"fanout"`` (every region sends)."""
        self._execution_mode = check.check_choice(mode, "execution_mode", check.EXECUTION_MODES)
        return self

    def retry_policy(self, policy: dict[str, Any]) -> Step:
        """``{"max_retries", "max_reroutes", "retry_codes", "reroute_codes"}``."""
        self._retry_policy = check.check_retry_policy(policy)
        return self

    def retry_at(self, timestamp_ms: int) -> Step:
        """Do not run before this Unix time, in milliseconds."""
        self._retry_at = check.check_epoch_ms(timestamp_ms, "retry_at")
        return self

    def start_before(self, timestamp_ms: int) -> Step:
        """Start no later than this Unix time, in milliseconds (``start_before_ms``).

        A job not started by then ends with status ``"expired"`` (its webhooks
        say so) and is never sent late. It must be in the future, after
        ``retry_at`` if any.
        """
        self._start_before_ms = check.check_epoch_ms(timestamp_ms, "start_before_ms")
        return self

    def flow_control(self, key: str, rate: Optional[float] = None, parallelism: Optional[int] = None) -> Step:
        """Share a limit with every job of yours that names the same ``key`` (in every region), on top of the
        target domain's: at most ``rate`` requests/s and ``parallelism`` sends at once. A 429 with Retry-After
        on such a job pauses the key, not the domain. ``client.pause_flow_control(key)`` holds them all back."""
        spec: dict[str, Any] = {"key": key}
        if rate is not None:
            spec["rate"] = rate
        if parallelism is not None:
            spec["parallelism"] = parallelism
        self._flow_control = check.check_flow_control(spec)
        return self

    def idempotent_key(self, key: str) -> Step:
        """Your own deduplication key (overrides the strategy)."""
        self._idempotent_key = check.check_idempotent_key(key)
        return self

    def idempotent_strategy(self, strategy: Union[IdempotentStrategy, str]) -> Step:
        """``HASH`` (default: the same request runs once) or ``UNIQUE`` (every time)."""
        self._idempotent_strategy = _enum(IdempotentStrategy, strategy, "idempotent strategy")
        return self

    # -- FRUGAL only ---------------------------------------------------------

    def fallback_on_error(self, codes: list[int]) -> Step:
        """Status codes that forward a FRUGAL step to EZThrottle (default 429, 5xx)."""
        self._fallback_on_error = check.check_status_codes(codes, "fallback_on_error")
        return self

    def local_timeout(self, timeout: float) -> Step:
        """Timeout of a FRUGAL step's local request, in seconds (default 30)."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValidationError(f"local_timeout must be a number of seconds > 0, got {timeout!r}")
        self._local_timeout_s = timeout
        return self

    # -- workflow ------------------------------------------------------------

    def fallback(
        self,
        step: Step,
        trigger_on_error: Optional[list[int]] = None,
        trigger_on_timeout: Optional[int] = None,
    ) -> Step:
        """Add a fallback, tried after this step (and earlier fallbacks) fail.

        ``trigger_on_error`` limits it to those status codes,
        ``trigger_on_timeout`` (ms) to a step that takes longer; with neither
        it always triggers.
        """
        _check_step(step, "fallback")
        if trigger_on_error and trigger_on_timeout is not None:
            raise ValidationError("give trigger_on_error or trigger_on_timeout, not both")
        trigger: dict[str, Any] = {}
        if trigger_on_error:
            codes = check.check_status_codes(trigger_on_error, "trigger_on_error")
            trigger = {"type": "on_error", "codes": codes}
        elif trigger_on_timeout is not None:
            timeout_ms = check.check_positive_int(trigger_on_timeout, "trigger_on_timeout")
            trigger = {"type": "on_timeout", "timeout_ms": timeout_ms}
        self._fallbacks.append((step, trigger))
        return self

    def on_success(self, step: Step) -> Step:
        """Run ``step`` after this one succeeds."""
        self._on_success = _check_step(step, "on_success")
        return self

    def on_failure(self, step: Step, timeout_ms: Optional[int] = None) -> Step:
        """Run ``step`` after this one fails, or once ``timeout_ms`` passes without success."""
        self._on_failure = _check_step(step, "on_failure")
        if timeout_ms is not None:
            self._on_failure_timeout_ms = check.check_positive_int(timeout_ms, "timeout_ms")
        return self

    # -- descriptions and history (for people and LLM agents) ----------------

    def description(self, desc: str) -> Step:
        """What this step does, in words."""
        self._description = desc
        return self

    def response_description(self, desc: str) -> Step:
        """What this step's response data means."""
        self._response_description = desc
        return self

    def get_description(self) -> Optional[str]:
        return self._description

    def get_response_description(self) -> Optional[str]:
        return self._response_description

    def get_execution_history(self) -> list[dict[str, Any]]:
        """What this workflow did, step by step: ``{"step", "status", ...}``.

        A step run here has ``status`` ``"success"`` or ``"failed"`` (with
        ``response`` or ``error``); a job handed to EZThrottle has
        ``"submitted"`` (a PERFORMANCE step, chained ones included) or
        ``"forwarded"`` (a FRUGAL step), with its ``job_id``.
        """
        return list(self._history)

    def execution_trace(self) -> str:
        """The execution history as numbered lines, for logs or an LLM prompt."""
        if not self._history:
            return "No execution history."
        lines = []
        for number, entry in enumerate(self._history, 1):
            lines.append(f"{number}. [{entry['status'].upper()}] {entry['step']}")
            if "response" in entry:
                response = str(entry["response"])
                if len(response) > _TRACE_RESPONSE_CHARS:
                    response = response[:_TRACE_RESPONSE_CHARS] + "..."
                lines.append(f"   Response: {response}")
            if "response_meaning" in entry:
                lines.append(f"   Meaning: {entry['response_meaning']}")
            if "job_id" in entry:
                lines.append(f"   Job: {entry['job_id']}")
            if "error" in entry:
                lines.append(f"   Error: {entry['error']}")
        return "\n".join(lines)

    # -- payload ---------------------------------------------------------------

    def _build_job_payload(self) -> dict[str, Any]:
        """The job payload for ``POST /api/v1/jobs``, chained steps included."""
        return self._payload(frozenset())

    def _payload(self, ancestors: frozenset[int]) -> dict[str, Any]:
        if id(self) in ancestors:
            raise ValidationError(f"{self!r} is chained to itself (the workflow has a cycle)")
        if self._url is None:
            raise ValidationError("URL is required: call .url(...) on every step")
        ancestors = ancestors | {id(self)}
        key = self._idempotent_key
        if key is None and self._idempotent_strategy is IdempotentStrategy.UNIQUE:
            key = str(uuid.uuid4())
        payload = check.build_job_payload(
            url=self._url,
            method=self._method,
            headers=self._headers,
            body=self._body,
            metadata=self._metadata,
            webhooks=self._webhooks,
            webhook_quorum=self._webhook_quorum,
            regions=self._regions,
            region_policy=self._region_policy,
            execution_mode=self._execution_mode,
            retry_policy=self._retry_policy,
            fallback_job=self._fallback_chain(ancestors),
            on_success=self._on_success._payload(ancestors) if self._on_success else None,
            on_failure=self._on_failure._payload(ancestors) if self._on_failure else None,
            on_failure_timeout_ms=self._on_failure_timeout_ms,
            idempotent_key=key,
            retry_at=self._retry_at,
            start_before_ms=self._start_before_ms,
            flow_control=self._flow_control,
        )
        if self._step_type is StepType.FRUGAL:
            # Only a FRUGAL step says its type, so payloads without one stay
            # byte-for-byte those of the published SDK. The server never runs a
            # FRUGAL child: it hands it back in the parent's webhook.
            payload["type"] = StepType.FRUGAL.value
        return payload

    def _fallback_chain(self, ancestors: frozenset[int]) -> Optional[dict[str, Any]]:
        """Nest the fallbacks: each one's ``fallback_job`` is the next one."""
        chain: Optional[dict[str, Any]] = None
        for step, trigger in reversed(self._fallbacks):
            job = step._payload(ancestors)
            job["trigger"] = trigger
            if chain is not None:
                if "fallback_job" in job:
                    raise ValidationError(
                        f"fallback {step!r} has fallbacks of its own and is followed by another fallback; a fallback chain is a single line"
                    )
                job["fallback_job"] = chain
            chain = job
        return chain

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], client: Any = None) -> Step:
        """The Step (with its chain) that a job payload describes.

        Accepts what ``_build_job_payload`` makes and what the server hands
        back in a webhook's ``workflow.frugal_steps`` (normalised: defaults
        filled in, nulls for absent values). FRUGAL-only local options
        (``fallback_on_error``, ``local_timeout``) are not part of a payload:
        such a step gets the defaults.
        """
        data = check.check_mapping(payload, "step payload")
        step = cls(client).url(check.check_url(data.get("url"))).method(data.get("method") or "GET")
        for name in _SETTER_FIELDS:
            value = data.get(name)
            if value is not None and (value or name not in _EMPTY_IS_UNSET):
                getattr(step, name)(value)
        if data.get("start_before_ms") is not None:
            step.start_before(data["start_before_ms"])
        if data.get("flow_control"):
            step.flow_control(**data["flow_control"])
        if data.get("on_failure_timeout_ms") is not None:
            step._on_failure_timeout_ms = check.check_positive_int(data["on_failure_timeout_ms"], "on_failure_timeout_ms")
        fallback = data.get("fallback_job")
        while fallback:  # a nested chain: each fallback is tried after the one before
            fallback = check.check_mapping(fallback, "fallback_job")
            inner = {k: v for k, v in fallback.items() if k not in ("fallback_job", "trigger")}
            step._fallbacks.append((cls.from_payload(inner, client), dict(fallback.get("trigger") or {})))
            fallback = fallback.get("fallback_job")
        if data.get("on_success"):
            step._on_success = cls.from_payload(data["on_success"], client)
        if data.get("on_failure"):
            step._on_failure = cls.from_payload(data["on_failure"], client)
        return step

    @property
    def step_type(self) -> StepType:
        return self._step_type

    # -- execution -------------------------------------------------------------

    def execute(self, client: Any = None) -> dict[str, Any]:
        """Run the step with a sync client (``EZThrottle``); return the result dict.

        PERFORMANCE returns the server's answer (``job_id``, ``status``,
        ``idempotent_key``). FRUGAL returns ``{"status": "success" | "failed",
        "executed_locally": True, "status_code", "response" | "error"}``, or
        the server's answer when it forwarded the job.
        """
        client = self._client_for(client, want_async=False)
        return _flow.run(self._flow(), lambda effect: effect.call(client))

    async def execute_async(self, client: Any = None) -> dict[str, Any]:
        """Async twin of ``execute()``, for ``AsyncEZThrottle``."""
        client = self._client_for(client, want_async=True)
        return await _flow.run_async(self._flow(), lambda effect: effect.call(client))

    def schedule(
        self,
        cron: Optional[str] = None,
        every_s: Optional[int] = None,
        timezone: str = "UTC",
        overlap: str = "skip",
        client: Any = None,
    ) -> dict[str, Any]:
        """Create a schedule that fires this step (``client.create_schedule``) instead of submitting it once.

        Each tick is one job built from this step (its chain included), once per tick;
        its idempotent key is the tick's (``sched:<schedule_id>:<tick ms>``), not the step's.
        """
        client = self._client_for(client, want_async=False)
        return dict(client.create_schedule(self, cron=cron, every_s=every_s, timezone=timezone, overlap=overlap))

    async def schedule_async(
        self,
        cron: Optional[str] = None,
        every_s: Optional[int] = None,
        timezone: str = "UTC",
        overlap: str = "skip",
        client: Any = None,
    ) -> dict[str, Any]:
        """Async twin of ``schedule()``, for ``AsyncEZThrottle``."""
        client = self._client_for(client, want_async=True)
        return dict(await client.create_schedule(self, cron=cron, every_s=every_s, timezone=timezone, overlap=overlap))

    def _client_for(self, client: Any, *, want_async: bool) -> Any:
        client = self.client if client is None else client
        if client is None:
            raise ValidationError("a client is required: Step(client) or .execute(client)")
        if inspect.iscoroutinefunction(client.submit_job) != want_async:
            raise TypeError(
                "use `await step.execute_async()` with AsyncEZThrottle"
                if not want_async
                else "execute_async() needs AsyncEZThrottle; use execute() with EZThrottle"
            )
        return client

    def _flow(self) -> _Flow:
        payload = self._build_job_payload()  # checks the whole workflow before any I/O
        if self._step_type is StepType.PERFORMANCE:
            return (yield from self._submit(payload, "submitted"))
        outcome = yield from _send_locally(self)
        if outcome.succeeded:
            return (yield from self._local_success(self, outcome))
        if outcome.status_code is None or outcome.status_code in self._fallback_on_error:
            for step, trigger in self._fallbacks:
                if step._step_type is StepType.FRUGAL and _triggered(trigger, outcome):
                    fallback_outcome = yield from _send_locally(step)
                    if fallback_outcome.succeeded:
                        return (yield from self._local_success(step, fallback_outcome))
            return (yield from self._submit(payload, "forwarded"))
        error = f"Request failed: {outcome.status_code}"
        self._record(self, "failed", error=error)
        if self._on_failure is not None:
            yield from self._run_chained(self._on_failure)
        return {
            "status": "failed",
            "executed_locally": True,
            "status_code": outcome.status_code,
            "error": error,
        }

    def _submit(self, payload: dict[str, Any], status: str) -> _Flow:
        """Submit the job; the history records its id (a chained step's is found there)."""
        stranded = sorted(set(_stranded_frugal_steps(payload, tried_fallbacks=status == "forwarded")))
        if stranded:
            _flow.warn_caller(
                f"{len(stranded)} FRUGAL step(s) of this workflow follow a job without webhooks, "
                f"so nothing can ever run them: {'; '.join(stranded)}. EZThrottle never runs a "
                "FRUGAL step chained to a job; it hands it back in that job's webhook, to your "
                "WebhookHandler. Give the job .webhooks([...]) pointing at it.",
                UserWarning,
            )
        result = cast("dict[str, Any]", (yield _Submit(payload)))
        self._record(self, status, job_id=result.get("job_id"))
        return result

    def _local_success(self, step: Step, outcome: _LocalOutcome) -> _Flow:
        """``step`` (this one or a local fallback) succeeded: run the success chains."""
        self._record(step, "success", response=outcome.text)
        for chained in {id(s): s for s in (step._on_success, self._on_success) if s}.values():
            yield from self._run_chained(chained)
        return {
            "status": "success",
            "executed_locally": True,
            "status_code": outcome.status_code,
            "response": outcome.text,
        }

    def _run_chained(self, step: Step) -> _ChainFlow:
        start = len(step._history)
        yield from step._flow()
        self._history.extend(step._history[start:])

    def _record(
        self,
        step: Step,
        status: str,
        *,
        response: Optional[str] = None,
        error: Optional[str] = None,
        job_id: Optional[str] = None,
    ) -> None:
        entry: dict[str, Any] = {
            "step": step._description or f"{step._method} {step._url}",
            "status": status,
        }
        if job_id is not None:
            entry["job_id"] = job_id
        if response is not None:
            entry["response"] = response
            if step._response_description:
                entry["response_meaning"] = step._response_description
        if error:
            entry["error"] = error
        self._history.append(entry)


def _enum(cls: type[Enum], value: object, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise ValidationError(f"unknown {what} {value!r}; use one of {choices}") from None


def _check_step(step: object, field: str) -> Step:
    if not isinstance(step, Step):
        raise ValidationError(f"{field} takes a Step, got {type(step).__name__}")
    return step


def _stranded_frugal_steps(job: Mapping[str, Any], tried_fallbacks: bool = False) -> Iterator[str]:
    """FRUGAL continuations of jobs without webhooks, as the server would run the chain.

    A FRUGAL continuation only reaches a client in its parent's webhook, so
    under a job without webhooks it never runs. Fallbacks inherit their
    parent's ``on_success``/``on_failure`` (as on the server).
    ``tried_fallbacks``: the job's FRUGAL fallbacks already had their local
    try (a forwarded FRUGAL step), so losing them is no loss.
    """
    for relation in ("on_success", "on_failure", "fallback_job"):
        child = job.get(relation)
        if not child:
            continue
        if relation == "fallback_job":
            child = dict(child)
            for inherited in ("on_success", "on_failure"):
                if not child.get(inherited) and job.get(inherited):
                    child[inherited] = job[inherited]
        in_local_chain = tried_fallbacks and relation == "fallback_job"
        if child.get("type") == StepType.FRUGAL.value:
            if not job.get("webhooks") and not in_local_chain:
                name = "fallback" if relation == "fallback_job" else relation
                yield f"{name} {child.get('method', 'GET')} {child.get('url')} after {job.get('url')}"
        else:  # a PERFORMANCE child is a job of its own, with its own continuations
            yield from _stranded_frugal_steps(child, in_local_chain)


def _triggered(trigger: dict[str, Any], outcome: _LocalOutcome) -> bool:
    """Does a fallback's trigger match a failed local attempt?"""
    if trigger.get("type") == "on_error":
        return outcome.status_code in trigger["codes"]
    if trigger.get("type") == "on_timeout":
        return outcome.timed_out
    return True


def _send_locally(step: Step) -> _flow.Flow[_LocalOutcome]:
    try:
        response = yield _SendLocally(step)
    except TimeoutError as exc:
        return _LocalOutcome(error=str(exc), timed_out=True)
    except ConnectionError as exc:
        return _LocalOutcome(error=str(exc))
    return _LocalOutcome(status_code=response.status_code, text=response.text)

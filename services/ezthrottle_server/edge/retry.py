"""What to do after an attempt: finish, retry in this region, or reroute.

Pure functions, no I/O: the worker applies the :class:`Decision`.

- ``retry_codes`` (default 429, 503) and timeouts retry in the same region,
  up to ``max_retries``, after exponential backoff with full jitter; a
  ``Retry-After`` answer waits at least that long.
- ``reroute_codes`` (default 500, 502, 504) and connection errors go to
  another region, up to ``max_reroutes``.
- Anything else is final. When a budget runs out the job fails with a reason:
  ``retries_exhausted``, ``reroutes_exhausted``, ``non_retryable_status``,
  ``timeout`` or ``outbound_blocked``; the attempt path says ``circuit_open``
  instead when a budget ran out on a failure to reach a domain whose circuit
  breaker is open (``edge/attempt.py``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from .executor import BLOCKED, CONNECTION, REDIRECTS, TIMEOUT, AttemptResult

SUCCESS, FAILED, RETRY, REROUTE = "success", "failed", "retry", "reroute"


@dataclass(slots=True)
class Decision:
    action: str  # SUCCESS, FAILED, RETRY or REROUTE
    reason: str = ""
    delay_s: float = 0.0


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # 'inf' or 'nan' is no wait a job can be scheduled by
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(retries_done: int, base_s: float, cap_s: float) -> float:
    """Full jitter: uniform between 0 and min(cap, base * 2**n)."""
    return random.uniform(0.0, min(cap_s, base_s * (2 ** min(retries_done, 30))))


def decide(
    result: AttemptResult,
    policy: dict[str, Any],
    retries_done: int,
    reroutes_done: int,
    *,
    base_s: float,
    cap_s: float,
) -> Decision:
    status = result.status_code
    if status is not None:
        if 200 <= status < 300:
            return Decision(SUCCESS)
        if status in policy["retry_codes"]:
            if retries_done >= policy["max_retries"]:
                return Decision(FAILED, "retries_exhausted")
            wait = backoff_s(retries_done, base_s, cap_s)
            hinted = retry_after_s(result.headers.get("retry-after"))
            return Decision(RETRY, f"status_{status}", max(wait, hinted or 0.0))
        if status in policy["reroute_codes"]:
            if reroutes_done >= policy["max_reroutes"]:
                return Decision(FAILED, "reroutes_exhausted")
            return Decision(REROUTE, f"status_{status}")
        return Decision(FAILED, "non_retryable_status")
    if result.error_kind == TIMEOUT:
        if retries_done >= policy["max_retries"]:
            return Decision(FAILED, "timeout")
        return Decision(RETRY, "timeout", backoff_s(retries_done, base_s, cap_s))
    if result.error_kind == CONNECTION:
        if reroutes_done >= policy["max_reroutes"]:
            return Decision(FAILED, "reroutes_exhausted")
        return Decision(REROUTE, "connection_error")
    if result.error_kind == BLOCKED:
        return Decision(FAILED, "outbound_blocked")
    if result.error_kind == REDIRECTS:
        return Decision(FAILED, "too_many_redirects")
    return Decision(FAILED, result.error_kind or "unknown")

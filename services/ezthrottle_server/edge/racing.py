"""Racing and fanout across regions: the pure rules (no I/O).

A job runs in every region routing chose for it. In ``race`` mode the first
*final* outcome claims the job atomically (``finish.lua``); the other regions
see the claim and stop. In ``fanout`` mode every region sends once, with its
own retries, and the job succeeds only if all did.

Outcomes are of three kinds for ``finish.lua``:

- ``success``: a 2xx: the job is won.
- ``failed``: a definitive answer that any region would get too (a status
  that is not retried, a refused destination): the job fails now.
- ``out``: this region has no tries left (retries or reroutes spent,
  timeouts); the job fails only when no region is left.

Requests that are not safe to send twice (POST or PATCH without an
``Idempotency-Key`` header of the user's) race for a send lease instead of
sending concurrently: at most one region sends at a time, and a dead holder's
lease expires so another region takes over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..common.jobs import has_header
from .retry import Decision

SUCCESS_KIND, FAILED_KIND, OUT_KIND = "success", "failed", "out"

# Failures every region would see alike: no point trying elsewhere.
DEFINITIVE_REASONS = frozenset({"non_retryable_status", "outbound_blocked", "invalid_redirect", "too_many_redirects"})


def finish_kind(decision: Decision) -> str:
    if decision.action == "success":
        return SUCCESS_KIND
    return FAILED_KIND if decision.reason in DEFINITIVE_REASONS else OUT_KIND


def reroute_target(
    spec: Mapping[str, Any],
    here: str,
    tried: Sequence[str],
    states: Mapping[str, str],
    preference: Sequence[str],
) -> str | None:
    """A healthy region the job has not tried yet, in preference order; None if none.

    ``strict`` jobs stay inside the regions they asked for. While a coordinator
    judges regions, only those it finds up or degraded qualify (a region no
    node ever reported from has nobody to run the job); with no coordinator,
    any region not known to be down does.
    """
    pool: Sequence[str] = preference
    if spec.get("region_policy") == "strict" and spec.get("regions"):
        pool = [r for r in preference if r in spec["regions"]]
    judged = any(s in ("up", "degraded", "down") for s in states.values())
    for region in pool:
        if region == here or region in tried:
            continue
        state = states.get(region)
        if (state in ("up", "degraded")) if judged else state != "down":
            return region
    return None


def send_headers(spec: Mapping[str, Any], idempotent_key: str | None, add_key: bool) -> dict[str, str]:
    """The job's headers, plus ``Idempotency-Key: <job key>`` unless the user set one."""
    headers = dict(spec["headers"])
    if add_key and idempotent_key and not has_header(headers, "Idempotency-Key"):
        headers["Idempotency-Key"] = idempotent_key
    return headers

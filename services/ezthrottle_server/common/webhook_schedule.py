"""When to try a webhook again, and when to give up: a pure decision.

A 2xx answer delivers the webhook. A 410 Gone stops at once: the receiver
says the endpoint is gone, so the webhook is dead-lettered (an operator may
replay it). A POST the outbound policy refuses is dead-lettered too: waiting
does not change the policy. Anything else (another status, a timeout, a
refused connection, a redirect: webhooks are not followed) is retried with
exponential backoff and equal jitter::

    ceiling(n) = min(cap, base * 2 ** (n - 1))      after the n-th failed POST
    delay(n)   = ceiling(n) / 2 + uniform(0, ceiling(n) / 2)

until the next POST would fall after the retry window (``since`` +
``window``), when the webhook is dead-lettered instead. Equal jitter (rather
than full) keeps every delay at least half its ceiling, so the schedule is
predictable while receivers coming back up are not hit by every job at once.

With the defaults (base 10 s, cap 1 h, window 24 h) the ceilings are 10 s,
20 s, 40 s, … 2560 s (about 43 min), then 1 h: the first nine retries fall
within the first 45-85 min, then one every 30-60 min, so about 30-55 POSTs
over the day before the dead letter. A replay starts a fresh window, and the
backoff starts again from ``base``. Settings: ``delivery_backoff_base_s``,
``delivery_backoff_cap_s``, ``delivery_window_s``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .deliveries import BLOCKED, DEAD, DELIVERED, GONE, WINDOW_EXHAUSTED

RETRY = "retry"


@dataclass(slots=True)
class Decision:
    action: str  # DELIVERED, RETRY or DEAD
    delay_s: float = 0.0
    reason: str = ""  # why DEAD


def backoff_s(failures: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """The delay after the ``failures``-th failed POST (1-based)."""
    ceiling: float = min(cap_s, base_s * 2 ** max(failures - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def decide(
    status_code: int | None,
    *,
    blocked: bool,
    failures: int,
    since_ms: int,
    now_ms: int,
    base_s: float,
    cap_s: float,
    window_s: float,
    rng: random.Random | None = None,
) -> Decision:
    """What follows a POST that got ``status_code`` (None: no answer).

    ``failures`` counts the failed POSTs of this window, this one included.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Decision(DELIVERED)
    if status_code == 410:
        return Decision(DEAD, reason=GONE)
    if blocked:
        return Decision(DEAD, reason=BLOCKED)
    delay = backoff_s(failures, base_s, cap_s, rng)
    if now_ms + delay * 1000 > since_ms + window_s * 1000:
        return Decision(DEAD, reason=WINDOW_EXHAUSTED)
    return Decision(RETRY, delay_s=delay)

"""What a target's answer says about its own limits.

- ``X-Aqueduct-Rps`` / ``X-EZTHROTTLE-RPS``: requests per second, a float
  (0.5 = one request every 2 s). The Aqueduct name wins when both are valid.
- ``X-Aqueduct-Max-Concurrent`` / ``X-EZTHROTTLE-MAX-CONCURRENT``: requests in
  flight per node, a positive integer.
- ``Retry-After`` on a 429 or 503: pause the domain until then.

Invalid values are ignored and counted (``ezt_pacing_header_invalid_total``).
The rate is raised to a floor here; the ceiling is applied in Redis, where the
domain's own configured ceiling is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..common.metrics import PACING_HEADER_INVALID

RPS_HEADERS = ("x-aqueduct-rps", "x-ezthrottle-rps")  # first valid one wins
MAX_CONCURRENT_HEADERS = ("x-aqueduct-max-concurrent", "x-ezthrottle-max-concurrent")
PAUSING_STATUSES = frozenset({429, 503})
_MAX_CONCURRENT_SANE = 1_000_000


@dataclass(slots=True)
class TargetHints:
    rps: float | None = None
    max_concurrent: int | None = None
    pause_until_ms: int | None = None
    # What release.lua learns from: "429" (refused: too many; the rate), "ok" (2xx), "infra" (no answer, or
    # 502/504: the circuit breaker), "http" (any other answer), "" (nothing was sent).
    answer: str = ""

    @property
    def empty(self) -> bool:
        return self.rps is None and self.max_concurrent is None and self.pause_until_ms is None and not self.answer


def _rps(value: str) -> float | None:
    try:
        rps = float(value.strip())
    except ValueError:
        return None
    return rps if math.isfinite(rps) and rps > 0 else None


def _max_concurrent(value: str) -> int | None:
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # '²'.isdigit() is true, int('²') fails
        return None
    n = int(value)
    return n if 1 <= n <= _MAX_CONCURRENT_SANE else None


def _first_valid(headers: Mapping[str, str], names: tuple[str, ...], parse: Callable[[str], object | None]) -> object | None:
    found = None
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        value = parse(raw)
        if value is None:
            PACING_HEADER_INVALID.labels(name).inc()
        elif found is None:
            found = value
    return found


INFRA_STATUSES = frozenset({502, 504})  # a gateway that could not reach the target: counts as no answer


def _answer(status: int) -> str:
    if status == 429:
        return "429"
    if 200 <= status < 300:
        return "ok"
    return "infra" if status in INFRA_STATUSES else "http"


def read_hints(
    status: int | None,
    headers: Mapping[str, str],
    *,
    now_ms: int,
    retry_after_s: float | None,
    min_rps: float,
    max_pause_s: float,
) -> TargetHints:
    """Hints from one answer; ``headers`` lower-cased, ``retry_after_s`` already parsed."""
    if status is None:
        return TargetHints()
    rps = _first_valid(headers, RPS_HEADERS, _rps)
    mc = _first_valid(headers, MAX_CONCURRENT_HEADERS, _max_concurrent)
    pause = None
    if status in PAUSING_STATUSES and retry_after_s is not None and retry_after_s > 0:
        pause = now_ms + int(min(retry_after_s, max_pause_s) * 1000)
    return TargetHints(
        rps=max(float(rps), min_rps) if rps is not None else None,  # type: ignore[arg-type]
        max_concurrent=mc,  # type: ignore[arg-type]
        pause_until_ms=pause,
        answer=_answer(status),
    )

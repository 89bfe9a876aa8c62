"""A node's recent outbound outcomes per target domain, for the heartbeat.

Infrastructure failures are connection errors and timeouts. The window is
bounded in time and size. These are customers' targets: the coordinator only
compares them across regions (the same domain failing from here while it
answers from another region), never judges a region by them alone
(coordinator/health.py).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

MAX_DOMAINS = 50  # per heartbeat: the most attempted ones


class OutcomeWindow:
    def __init__(self, window_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.window_s = window_s
        self._entries: deque[tuple[float, str, bool]] = deque(maxlen=max_entries)

    def record(self, domain: str, infra_failure: bool) -> None:
        self._entries.append((time.monotonic(), domain, infra_failure))

    def snapshot(self) -> dict[str, Any]:
        cutoff = time.monotonic() - self.window_s
        while self._entries and self._entries[0][0] < cutoff:
            self._entries.popleft()
        attempts: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for _, domain, failed in self._entries:
            attempts[domain] += 1
            if failed:
                failures[domain] += 1
        return {
            "attempts": len(self._entries),
            "infra_failures": sum(failures.values()),
            "infra_failure_domains": sorted(failures)[:MAX_DOMAINS],
            # domain -> [attempts, infra failures], compared across regions by the coordinator
            "domains": {d: [n, failures[d]] for d, n in attempts.most_common(MAX_DOMAINS)},
        }

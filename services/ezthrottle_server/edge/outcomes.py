"""A node's recent outbound outcomes, for the heartbeat and region health.

Infrastructure failures are connection errors and timeouts: what says more
about the region's network than about one target. The window is bounded in
time and size.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any


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
        failed = [d for _, d, f in self._entries if f]
        return {
            "attempts": len(self._entries),
            "infra_failures": len(failed),
            "infra_failure_domains": sorted(set(failed))[:50],
        }

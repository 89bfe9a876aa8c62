"""What the job-control tests share (test_cancel.py, test_deadlines.py): final states, the clock,
and the admission counters of jobs not yet final. Their ``delivery`` fixture is in conftest.py."""

from __future__ import annotations

import time
from typing import Any

FINAL = frozenset({"success", "failed", "cancelled", "expired"})


def now_ms() -> int:
    return int(time.time() * 1000)


async def queued_count(redis: Any, customer: str = "acme") -> int:
    """The customer's jobs not yet final (admission counters), summed over every partition."""
    total = 0
    async for key in redis.scan_iter(match="ezt:{ezt:p*}:queued"):
        total += int(await redis.hget(key, customer) or 0)
    return total

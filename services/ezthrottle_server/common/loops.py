"""A service's simple background loop: one step, again every so often, that a failure never ends.

Heartbeats, sweeps and refreshes run so. Loops with more to them (the
stream readers, ``common/streams.py``; the coordinator's, ``coordinator/lease.py``
``keep_polling``; the pacing scheduler) keep their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def run_every(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    log: logging.Logger,
    failed: str,
    level: int = logging.WARNING,
    first_now: bool = False,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``step`` every ``interval_s`` (the first time at once with ``first_now``) until ``until()`` or cancellation.

    A failing step is logged on ``log`` (``failed``, at ``level``, with its
    traceback) and runs again at the next turn.
    """
    wait = not first_now
    while not until():
        if wait:
            await asyncio.sleep(interval_s)
        wait = True
        try:
            await step()
        except Exception:  # not CancelledError: that ends the loop
            log.log(level, failed, exc_info=True)

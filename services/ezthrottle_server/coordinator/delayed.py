"""Releases delayed work (``retry_at``, retry backoff) into region streams on time.

Delayed jobs live in each partition's sorted set, never in a process's
memory. The coordinator holding the lease moves due entries with one Lua
call per partition when the first entry is due, or when one is put ahead of
it (coordinator/wake.py), at most every ``poll_s`` (so jobs start within
about that much of their due time). A standby does the same every ``standby_poll_s``:
the script moves each entry once however many run it, so when the active
coordinator dies, delayed work keeps going out without waiting for the lease
to change hands.
"""

from __future__ import annotations

import logging
import time

from ..common import job_scripts
from ..common.metrics import DELAYED_RELEASED
from .loop import CoordinatorLoop

log = logging.getLogger(__name__)

BATCH = 1000  # entries moved per partition and call


class DelayedReleaser(CoordinatorLoop):
    what = "delayed release"
    poll_s = 0.02  # jobs start within about this much of their due time
    standby_poll_s = 0.25  # each entry moves once however many coordinators run the script
    wakes_on = ("delayed",)

    async def release_due(self) -> int:
        regions = list(self.settings.region_ids)
        now = int(time.time() * 1000)
        moved = 0
        next_due: list[int] = []
        for p in range(self.settings.partitions):
            swept = await job_scripts.release_delayed(self.scripts.release_delayed, p, regions, now_ms=now, most=BATCH)
            moved += swept.moved
            if swept.next_ms is not None:
                next_due.append(swept.next_ms)
        self.next_due_ms = min(next_due, default=None)
        if moved:
            DELAYED_RELEASED.inc(moved)
        return moved

    async def poll(self) -> bool:
        return await self.release_due() >= BATCH  # a backlog: go again at once

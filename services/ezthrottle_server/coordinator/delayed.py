"""Releases delayed work (``retry_at``, retry backoff) into region streams on time.

Delayed jobs live in each partition's sorted set, never in a process's
memory. The coordinator holding the lease moves due entries with one Lua
call per partition, polling every ``poll_s`` (so jobs start within about that
much of their due time). A standby does the same every ``standby_poll_s``:
the script moves each entry once however many run it, so when the active
coordinator dies, delayed work keeps going out without waiting for the lease
to change hands.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from ..common import keys
from ..common.config import Settings
from ..common.metrics import DELAYED_RELEASED
from ..common.redisconn import Scripts
from .lease import Leadership
from .loop import CoordinatorLoop

log = logging.getLogger(__name__)


class DelayedReleaser(CoordinatorLoop):
    what = "delayed release"

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        scripts: Scripts,
        lease: Leadership,
        poll_s: float = 0.02,
        standby_poll_s: float = 0.25,
    ) -> None:
        super().__init__(settings, redis, scripts, lease, poll_s=poll_s, standby_poll_s=standby_poll_s)

    async def release_due(self) -> int:
        regions = list(self.settings.region_ids)
        now = int(time.time() * 1000)
        moved = 0
        for p in range(self.settings.partitions):
            moved += await self.scripts.release_delayed(
                keys=[keys.delayed(p), *(keys.region_stream(p, r) for r in regions)],
                args=[now, 1000, keys.job_events(""), *regions],
            )
        if moved:
            DELAYED_RELEASED.inc(moved)
        return moved

    async def poll(self) -> bool:
        return await self.release_due() >= 1000  # a backlog: go again at once

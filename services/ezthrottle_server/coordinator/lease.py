"""Leadership: exactly one active coordinator, through a Redis lease.

The holder renews every ``ttl/3``; a standby tries as often, so it takes over
within one TTL of the holder's death. Leader-only loops check ``is_leader``.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from ..common import keys
from ..common.metrics import COORDINATOR_LEADER
from ..common.redisconn import UNAVAILABLE, Scripts

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts, holder: str, ttl_ms: int = 3000) -> None:
        self.redis = redis
        self.scripts = scripts
        self.holder = holder
        self.ttl_ms = ttl_ms
        self.is_leader = False
        self.changed = asyncio.Event()

    async def tick(self) -> bool:
        try:
            held = await self.scripts.renew_lease(keys=[keys.coordinator_leader()], args=[self.holder, self.ttl_ms]) == 1
        except UNAVAILABLE:  # also a cluster failing over
            held = False  # cannot prove we hold it: act as a standby
        if held != self.is_leader:
            self.is_leader = held
            COORDINATOR_LEADER.set(1 if held else 0)
            self.changed.set()
            log.info("%s the coordinator lease", "took" if held else "lost")
        return held

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.ttl_ms / 3000.0)

    async def release(self) -> None:
        if self.is_leader:
            try:
                await self.scripts.release_lease(keys=[keys.coordinator_leader()], args=[self.holder])
            finally:
                self.is_leader = False
                COORDINATOR_LEADER.set(0)

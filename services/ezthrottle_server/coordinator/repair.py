"""The active coordinator's repair of jobs that nothing holds any more.

The pass itself, and why a job can end up held by nothing on a Redis
Cluster, is ``common/repair.py``; what holds a job is ``common/holders.py``.
This loop runs one pass every quarter of ``repair_after_s`` (0.2 s to 30 s),
on the leader alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..common.config import Settings
from ..common.redisconn import Scripts
from ..common.repair import RepairPass
from .lease import Leadership
from .loop import CoordinatorLoop

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient


class Repairer(CoordinatorLoop):
    what = "job repair pass"

    def __init__(self, settings: Settings, redis: RedisClient, scripts: Scripts, lease: Leadership) -> None:
        super().__init__(settings, redis, scripts, lease, poll_s=min(max(settings.repair_after_s / 4, 0.2), 30.0))
        self.repair = RepairPass(settings, redis, scripts, leading=lambda: lease.is_leader)

    @property
    def found(self) -> list[dict[str, Any]]:
        """What the last pass queued again."""
        return self.repair.found

    async def poll(self) -> bool:
        self.repair.found.clear()  # kept for one pass
        await self.repair.sweep()
        return False

    async def sweep(self) -> int:
        """One pass over every job record; returns how many jobs were queued again."""
        return await self.repair.sweep()

"""Leadership: exactly one active coordinator, through a Redis lease.

The holder renews every ``ttl/3``; a standby tries as often, so it takes over
within one TTL of the holder's death. Leader-only loops check ``is_leader``;
:func:`keep_polling` runs the coordinator's periodic work by that rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..common import keys, leases
from ..common.metrics import COORDINATOR_LEADER
from ..common.redisconn import UNAVAILABLE, Scripts

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)


@dataclass(eq=False)  # compared and hashed as itself
class Lease:
    redis: RedisClient
    scripts: Scripts
    holder: str
    ttl_ms: int = 3000
    is_leader: bool = field(default=False, init=False)
    changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # set when leadership is taken or lost

    async def tick(self) -> bool:
        try:
            held = await leases.renew(self.scripts.renew_lease, keys.coordinator_leader(), holder=self.holder, ttl_ms=self.ttl_ms)
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
                await leases.release(self.scripts.release_lease, keys.coordinator_leader(), holder=self.holder)
            finally:
                self.is_leader = False
                COORDINATOR_LEADER.set(0)


class Leadership(Protocol):
    """The coordinator's lease, or an operator's command that acts regardless."""

    is_leader: bool


async def keep_polling(
    leadership: Leadership,
    step: Callable[[], Awaitable[bool]],
    *,
    what: str,
    poll_s: float,
    standby_poll_s: float | None = None,
    rest: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``step`` forever: every ``poll_s`` while leading, at once again while it says more work waits.

    ``rest``: how the leader waits between passes instead (coordinator/loop.py).

    ``standby_poll_s``: a standby runs it too, that often (work whose scripts
    make doing it twice harmless); None: only the leader does. Redis being
    unavailable, or a bug in one pass, pauses the work half a second; it never
    ends the loop.
    """
    while True:
        leading = leadership.is_leader
        if leading or standby_poll_s is not None:
            try:
                if await step() and leading:
                    continue
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE:  # also a cluster failing over
                log.warning("redis unavailable; %s paused", what, exc_info=True)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("%s failed", what)
                await asyncio.sleep(0.5)
        if leading and rest is not None:
            await rest()
        else:
            await asyncio.sleep(poll_s if leading or standby_poll_s is None else standby_poll_s)

"""The coordinator's periodic work, one shape for every loop.

Delayed release, workflow chains, repair, evacuation and the queue sampler
are each a :class:`CoordinatorLoop`: what they all need (settings, Redis,
scripts, the leadership), their pace, and one pass, :meth:`~CoordinatorLoop.poll`.
:meth:`~CoordinatorLoop.run` repeats the pass by the lease's rule
(:func:`~.lease.keep_polling`): every ``poll_s`` while leading, again at once
while a pass says more work waits, and every ``standby_poll_s`` on a standby
when the work is safe to do twice (None: the leader alone). Redis being
unavailable, or a bug in one pass, pauses the loop; it never ends it.

A loop that names its wake-ups (``wakes_on``, coordinator/wake.py) rests
longer while leading: until its next entry is due (``next_due_ms``, which its
pass sets), a wake-up, or ``wake.IDLE_S``, and never less than ``poll_s``
from the start of one pass to the next. An idle coordinator so makes a few
Redis calls a second, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, ClassVar

from ..common.config import Settings
from ..common.redisconn import Scripts
from .lease import Leadership, keep_polling
from .wake import IDLE_S, Wakes

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient


class CoordinatorLoop:
    """One kind of periodic work of the coordinator; subclasses write :meth:`poll`.

    A subclass declares its pace (``poll_s``, ``standby_poll_s``) as class
    attributes; ``poll_s``/``standby_poll_s`` given here override them.
    """

    what: ClassVar[str] = "coordinator pass"  # names the work in logs ("delayed release paused")
    poll_s: float = 0.25
    standby_poll_s: float | None = None  # None: the leader alone does the work
    wakes_on: ClassVar[tuple[str, ...]] = ()  # the wake-ups this loop rests for (coordinator/wake.py); (): every poll_s

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        lease: Leadership,
        poll_s: float | None = None,
        standby_poll_s: float | None = None,
        wakes: Wakes | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.lease = lease
        if poll_s is not None:
            self.poll_s = poll_s
        if standby_poll_s is not None:
            self.standby_poll_s = standby_poll_s
        self.wakes = wakes if self.wakes_on else None
        self.woken = self.wakes.event(*self.wakes_on) if self.wakes is not None else None
        self.next_due_ms: int | None = None  # the pass's: when its next entry is due (None: none known)
        self._pass_started = 0.0

    async def poll(self) -> bool:
        """One pass; True when more work waits (the leader goes again at once)."""
        raise NotImplementedError

    async def run(self) -> None:
        rest = self._rest if self.woken is not None else None
        await keep_polling(self.lease, self._pass, what=self.what, poll_s=self.poll_s, standby_poll_s=self.standby_poll_s, rest=rest)

    async def _pass(self) -> bool:
        self._pass_started = time.monotonic()
        return await self.poll()

    async def _rest(self) -> None:
        """The leader's wait after a pass (see the module docstring)."""
        assert self.wakes is not None and self.woken is not None
        wait = 0.0
        if self.wakes.listening:
            wait = IDLE_S
            if self.next_due_ms is not None:
                wait = min(wait, (self.next_due_ms - time.time() * 1000) / 1000)
        if wait > self._pass_started + self.poll_s - time.monotonic():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it may swallow a cancel (edge/app.py)
                    await self.woken.wait()
        gap = self._pass_started + self.poll_s - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        self.woken.clear()  # before the next pass: what wakes it from now on is for the pass after

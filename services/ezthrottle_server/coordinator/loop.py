"""The coordinator's periodic work, one shape for every loop.

Delayed release, workflow chains, repair, evacuation and the queue sampler
are each a :class:`CoordinatorLoop`: what they all need (settings, Redis,
scripts, the leadership), their pace, and one pass, :meth:`~CoordinatorLoop.poll`.
:meth:`~CoordinatorLoop.run` repeats the pass by the lease's rule
(:func:`~.lease.keep_polling`): every ``poll_s`` while leading, again at once
while a pass says more work waits, and every ``standby_poll_s`` on a standby
when the work is safe to do twice (None: the leader alone). Redis being
unavailable, or a bug in one pass, pauses the loop; it never ends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..common.config import Settings
from ..common.redisconn import Scripts
from .lease import Leadership, keep_polling

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

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        lease: Leadership,
        poll_s: float | None = None,
        standby_poll_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.lease = lease
        if poll_s is not None:
            self.poll_s = poll_s
        if standby_poll_s is not None:
            self.standby_poll_s = standby_poll_s

    async def poll(self) -> bool:
        """One pass; True when more work waits (the leader goes again at once)."""
        raise NotImplementedError

    async def run(self) -> None:
        await keep_polling(self.lease, self.poll, what=self.what, poll_s=self.poll_s, standby_poll_s=self.standby_poll_s)

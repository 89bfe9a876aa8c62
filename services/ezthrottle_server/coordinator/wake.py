"""Wakes the coordinator's sleeping loops when work is put ahead of their sleep.

The delayed releaser, the workflow spawner and the schedule firer sleep,
while leading, until the first entry of their sets is due (delayed jobs;
workflow timers; schedules' next ticks), at most
:data:`IDLE_S`, and the spawner until a workflow event comes. Each script that
puts work ahead of that says so on ``keys.coordinator_wake()``
(``common/scripts/_wake.lua``): ``delayed``, ``timers`` or ``schedules`` for
an entry that became its set's first, ``spawn`` for a workflow event
(``pacing/scripts/flow_resume.lua`` says ``delayed`` when a resume makes
held-back jobs due). One subscription
sets each loop's event. Pub/sub is at most once (a reconnect misses what was
published meanwhile): a message lost costs at most :data:`IDLE_S`, and while
the subscription is down the loops poll as before (``poll_s``).
"""

from __future__ import annotations

import asyncio
import logging

from ..common import keys
from ..common.pubsub import EventHub

log = logging.getLogger(__name__)

IDLE_S = 1.0  # a leading loop looks at least this often, woken or not
RETRY_S = 0.5  # the subscription, again after a failure


class Wakes:
    """The coordinator's one subscription to its wake-ups, as an event per loop."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.listening = False  # subscribed: the loops may sleep past poll_s
        self._events: dict[str, asyncio.Event] = {}

    def event(self, *what: str) -> asyncio.Event:
        """The event set by any of the messages ``what`` (one loop's)."""
        woken = asyncio.Event()
        for name in what:
            self._events[name] = woken
        return woken

    async def run(self) -> None:
        while True:
            try:
                async with self.hub.watch(keys.coordinator_wake()) as queue:
                    self.listening = True
                    self._wake_all()  # whatever came while not listening: a look now
                    while (message := await queue.get()) is not None:
                        woken = self._events.get(str(message))
                        if woken is not None:
                            woken.set()
                    log.warning("coordinator wake-ups closed; polling")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("coordinator wake-ups unavailable; polling meanwhile", exc_info=True)
            finally:
                self.listening = False
            await asyncio.sleep(RETRY_S)

    def _wake_all(self) -> None:
        for woken in self._events.values():
            woken.set()

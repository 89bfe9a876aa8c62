"""Typed calls of the schedule scripts (``common/schedules.py`` says what a schedule holds).

``schedule_write.lua`` (create, change, pause), ``schedule_delete.lua``,
``schedule_claim.lua`` (a tick, once) and ``schedule_fired.lua`` (what the
tick became); every key is under the ``{ezt:sched}`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any, Literal

from . import keys
from .scripting import ScriptRun

PAUSED: Literal["paused"] = "paused"  # update()'s next_ms: the schedule leaves the due set


class Created(IntEnum):
    AT_MOST = -1  # the customer has its most schedules: nothing written
    EXISTS = 0  # the id is taken: nothing written
    CREATED = 1


def _keys(schedule_id: str, customer: str) -> list[str]:
    return [keys.schedule(schedule_id), keys.schedules_due(), keys.customer_schedules(customer)]


def _flat(fields: Mapping[str, Any]) -> list[Any]:
    return [x for kv in fields.items() for x in kv]


async def create(run: ScriptRun, schedule_id: str, customer: str, fields: Mapping[str, Any], *, next_ms: int, most: int) -> Created:
    """Store a new schedule (``fields``: the hash) due at ``next_ms``, unless the customer has ``most`` already."""
    written = await run(keys=_keys(schedule_id, customer), args=["create", schedule_id, customer, most, next_ms, *_flat(fields)])
    return Created(int(written))


async def update(
    run: ScriptRun, schedule_id: str, customer: str, fields: Mapping[str, Any], *, next_ms: int | Literal["paused"] | None
) -> bool:
    """Change the customer's schedule: set ``fields``; ``next_ms`` a time (its next tick), :data:`PAUSED`, or None (as it was).

    False when the customer has no such schedule.
    """
    next_arg: int | str = "" if next_ms is None else next_ms
    return int(await run(keys=_keys(schedule_id, customer), args=["update", schedule_id, customer, 0, next_arg, *_flat(fields)])) == 1


async def delete(run: ScriptRun, schedule_id: str, customer: str) -> bool:
    """Delete the customer's schedule, wherever it waits; False when the customer has no such schedule."""
    return int(await run(keys=[*_keys(schedule_id, customer), keys.schedules_firing()], args=[schedule_id, customer])) == 1


async def claim(run: ScriptRun, schedule_id: str, *, tick_ms: str, next_ms: int, now_ms: int, skip: bool) -> bool:
    """Claim one tick (``tick_ms``: ``next_ms`` as read), once; the schedule moves on to ``next_ms``.

    ``skip``: the tick is claimed and counted as skipped (overlap: the last job is not final).
    False when not claimed (gone, paused, claimed already, or a claimed tick not yet recorded).
    """
    claimed = await run(
        keys=[keys.schedule(schedule_id), keys.schedules_due(), keys.schedules_firing()],
        args=[schedule_id, tick_ms, next_ms, now_ms, "skip" if skip else "fire"],
    )
    return int(claimed) == 1


async def fired(run: ScriptRun, schedule_id: str, *, tick_ms: int, created: bool, fields: Mapping[str, Any]) -> bool:
    """Record what a claimed tick became (``fields``: last_job_id, last_error, ...); False when the schedule no longer waits for it."""
    done = await run(
        keys=[keys.schedule(schedule_id), keys.schedules_firing()], args=[schedule_id, tick_ms, 1 if created else 0, *_flat(fields)]
    )
    return int(done) == 1

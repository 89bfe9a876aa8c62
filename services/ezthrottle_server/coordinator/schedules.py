"""Fires schedules (common/schedules.py): each tick once, as an ordinary job.

The leader alone reads the due set, when its first schedule is due or a
change puts one ahead of that (``schedule_write.lua`` wakes it:
coordinator/wake.py), at most every ``poll_s``. Each tick is then claimed before it fires
(``schedule_claim.lua``): the claim moves ``next_ms`` from the tick it read to
the first tick after now, so a second coordinator, a failover mid-pass or a
repeat finds it moved and fires nothing, and ticks missed while no
coordinator ran fire once, not once each. The claimed tick is marked
``firing`` until ``schedule_fired.lua`` records what it became; a coordinator
that dies in between leaves it marked, and the next leader submits it again
after ``STALE_FIRING_MS``: the job's idempotent key, ``sched:<id>:<tick ms>``,
makes that repeat the same job, never a second one.

A tick becomes a job through ``common/acceptance.py`` (``submit.lua``, the
submission's path: quota, admission ceiling, idempotency), linked to its
schedule (record field ``schedule``). A tick over the customer's quota (or
its ceiling of jobs not yet final) creates nothing and is recorded as
``last_error``. ``overlap: skip``: a tick is skipped while the job the last
tick fired is not final.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from ..common import acceptance, keys, schedule_scripts, schedules
from ..common.errors import ApiError
from ..common.job_scripts import JobState, Submitted
from ..common.metrics import SCHEDULE_TICKS
from ..common.routing import RegionStates, choose_regions
from ..common.storage import ByteBudget
from ..common.urls import domain_of
from .loop import CoordinatorLoop

log = logging.getLogger(__name__)

BATCH = 100  # due schedules read per pass (more: the next pass at once)
MAX_MISSED_COUNTED = 1000  # ticks missed that one claim counts, at most (ezt_schedule_ticks_total)
STALE_FIRING_MS = 5_000  # a claimed tick not recorded this long after its claim: its coordinator died; submit it again


def tick_key(schedule_id: str, tick_ms: int) -> str:
    """The idempotent key of a tick's job: one job per tick, however often it is submitted."""
    return f"sched:{schedule_id}:{tick_ms}"


def missed_ticks(schedule: dict[str, str], tick_ms: int, now_ms: int) -> int:
    """Ticks after ``tick_ms`` up to ``now_ms``: missed while no coordinator fired them, folded into this one (at most
    :data:`MAX_MISSED_COUNTED` counted)."""
    missed, at = 0, tick_ms
    while missed < MAX_MISSED_COUNTED:
        at = schedules.next_fire_ms(schedule, at)
        if at > now_ms:
            break
        missed += 1
    return missed


class ScheduleFirer(CoordinatorLoop):
    what = "schedules"
    poll_s = 0.1  # a tick fires within about this much of its time
    wakes_on = ("schedules",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.regions = RegionStates(self.redis, self.settings.region_ids)
        self.budget = ByteBudget(self.settings, self.redis)

    async def poll(self) -> bool:
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(keys.schedules_firing(), "-inf", now - STALE_FIRING_MS, start=0, num=BATCH)
            pipe.zrangebyscore(keys.schedules_due(), "-inf", now, start=0, num=BATCH)
            pipe.zrange(keys.schedules_firing(), 0, 0, withscores=True)
            pipe.zrange(keys.schedules_due(), 0, 0, withscores=True)
            stale, due, first_firing, first_due = await pipe.execute()
        # the next look: the first tick due, or the first claim going stale (one fired in this pass: at once)
        firsts = [int(score) + STALE_FIRING_MS for _id, score in first_firing] + [int(score) for _id, score in first_due]
        self.next_due_ms = min(firsts, default=None)
        for schedule_id in stale:
            await self._resubmit(schedule_id)
        for schedule_id in due:
            try:
                await self._tick(schedule_id, now)
            except (ValueError, KeyError):  # a schedule written by hand, or by a version that is gone: never fire it
                log.warning("schedule %s is unreadable; paused", schedule_id, exc_info=True)
                await self.redis.zrem(keys.schedules_due(), schedule_id)
        return len(due) >= BATCH

    async def _tick(self, schedule_id: str, now: int) -> None:
        data: dict[str, str] = await self.redis.hgetall(keys.schedule(schedule_id))  # type: ignore[misc]  # redis-py#2399
        if not data:
            await self.redis.zrem(keys.schedules_due(), schedule_id)  # deleted: schedule_delete.lua took it out already
            return
        if data.get("firing") or data.get("paused") == "1":
            return  # the claimed tick is recorded first (or resubmitted once stale); a paused one waits for its resume
        tick = int(data["next_ms"])
        if tick > now:
            return
        skip = data.get("overlap", "skip") == "skip" and bool(data.get("last_job_id")) and not await self._final(data["last_job_id"])
        claimed = await schedule_scripts.claim(
            self.scripts.schedule_claim,
            schedule_id,
            tick_ms=data["next_ms"],
            next_ms=schedules.next_fire_ms(data, now),
            now_ms=now,
            skip=skip,
        )
        if not claimed:
            return  # another claim had it, or it changed meanwhile
        missed = missed_ticks(data, tick, now)
        if missed:
            SCHEDULE_TICKS.labels("missed_collapsed").inc(missed)
        if skip:
            log.info("schedule tick skipped: the last job is not final", extra={"schedule_id": schedule_id, "job_id": data["last_job_id"]})
            SCHEDULE_TICKS.labels("skipped").inc()
            return
        await self._fire(schedule_id, data, tick)

    async def _final(self, job_id: str) -> bool:
        if keys.job_partition(job_id) is None:
            return True
        state = await self.redis.hget(keys.job(job_id), "state")  # type: ignore[misc]  # redis-py#2399
        return state is None or state in JobState.FINAL  # a job expired away is over too

    async def _resubmit(self, schedule_id: str) -> None:
        data: dict[str, str] = await self.redis.hgetall(keys.schedule(schedule_id))  # type: ignore[misc]  # redis-py#2399
        if not data.get("firing"):
            await self.redis.zrem(keys.schedules_firing(), schedule_id)
            return
        log.warning("schedule tick claimed but not recorded; submitting it again", extra={"schedule_id": schedule_id})
        await self._fire(schedule_id, data, int(data["firing"]))

    async def _fire(self, schedule_id: str, data: dict[str, str], tick: int) -> None:
        """Submit the tick's job and record the outcome on the schedule."""
        job = orjson.loads(data["job"])
        job["idempotent_key"] = tick_key(schedule_id, tick)
        customer = data["customer"]
        here = data.get("region") or self.settings.region_ids[0]
        fields: dict[str, Any] = {"last_fired_ms": tick}
        created = False
        try:
            regions = choose_regions(
                job.get("regions"), job.get("region_policy", "fallback"), here, await self.regions.states(), self.settings.region_ids
            )
            reply = await acceptance.accept_job(
                self.redis,
                self.scripts,
                self.settings,
                job,
                customer,
                regions,
                domain_of(job["url"]),
                links={"schedule": schedule_id},
                budget=self.budget,
            )
        except ApiError as exc:  # no region to run it in
            fields["last_error"] = f"{exc.code}: {exc.message}"
        else:
            if reply.submitted is Submitted.CREATED:
                SCHEDULE_TICKS.labels("fired").inc()
            if reply.submitted in (Submitted.CREATED, Submitted.DUPLICATE):
                created = True  # a duplicate: an earlier submission of this tick made it (its record was lost with its coordinator)
                fields.update(last_job_id=reply.job_id, last_error="")
            elif reply.submitted is Submitted.QUOTA_SPENT:
                fields["last_error"] = "quota_exceeded: the customer's monthly cap is reached; the tick was skipped"
            elif reply.submitted is Submitted.BYTES_FULL:
                fields["last_error"] = "overloaded: the customer's jobs hold their byte budget of Redis memory; the tick was skipped"
            else:
                fields["last_error"] = "overloaded: the customer has its ceiling of jobs not yet final; the tick was skipped"
        await schedule_scripts.fired(self.scripts.schedule_fired, schedule_id, tick_ms=tick, created=created, fields=fields)
        log.debug("schedule fired", extra={"schedule_id": schedule_id, "job_id": fields.get("last_job_id"), "tick_ms": tick})

"""Finds jobs that nothing holds any more and queues them again.

A job that is not final is always held by something that will move it on
(``common/holders.py``: a stream entry, a delayed entry, a place in a pacing
queue, a pacing lease; an expired lease is put back in the queue by the next
grant). Each step hands the job to the next one before letting go of it.

On one Redis server that is the whole story. On a Redis Cluster it is not:
a job's partition and its target domain's pacing keys live on different
masters, and a failover loses the last writes the failed master had not yet
replicated. If those were "the job is parked in its pacing queue" while
"its stream entry is acknowledged" survived on the other master, nothing
holds the job any more and it would stay ``queued`` forever.

The active coordinator (``coordinator/repair.py``; ``ezthrottle-admin jobs
repair`` by hand) walks every job record (``SCAN``, paced, no index to keep
up on the hot path) and checks each job that is not final against those
four holders. A job found unheld is only suspected: it may have been moving
between two holders while it was looked at. It is queued again (in
``repair.lua``, which first checks that its state and attempts are still
what was seen) only when a later pass, at least ``repair_after_s`` later,
finds it unheld again and unchanged. A job held in a pacing queue whose
scope is missing from its region's ready set (a lost index write) gets its
scope put back, so that queue is served again.

This is a backstop: in normal operation it finds nothing, and
``ezt_jobs_repaired_total`` stays at 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import job_scripts, keys
from .config import Settings
from .holders import FIELDS, FINAL, Candidate, StreamJobs, holders
from .metrics import JOBS_REPAIRED
from .redisconn import Scripts

if TYPE_CHECKING:
    from .redisconn import RedisClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    """A job found unheld: what it looked like, and when."""

    fingerprint: tuple[Any, ...]
    at_ms: int


@dataclass(eq=False)  # compared and hashed as itself
class RepairPass:
    """Passes over every job record; a job found unheld twice, unchanged, ``repair_after_s`` apart, is queued again.

    ``leading``: asked between pages; a pass stops early once it answers False
    (the coordinator that lost its lease). ``dry_run``: find, but queue
    nothing again (``ezthrottle-admin jobs repair --dry-run``).
    """

    settings: Settings
    redis: RedisClient
    scripts: Scripts
    _: KW_ONLY
    batch: int = 500
    step_pause_s: float = 0.05
    dry_run: bool = False
    leading: Callable[[], bool] = lambda: True
    found: list[dict[str, Any]] = field(default_factory=list, init=False)  # what was (or would have been) queued again
    _suspects: dict[str, Seen] = field(default_factory=dict, init=False)

    @property
    def after_ms(self) -> int:
        return int(self.settings.repair_after_s * 1000)

    async def sweep(self) -> int:
        """One pass over every job record; returns how many jobs were queued again."""
        repaired = 0
        still: dict[str, Seen] = {}
        streams: StreamJobs = {}  # each stream read once per pass, when needed
        page: list[str] = []
        async for key in self.redis.scan_iter(match=keys.JOB_KEY_PATTERN, count=self.batch, _type="hash"):
            job_id = key.rpartition(":job:")[2]
            if ":" in job_id or keys.job_partition(job_id) is None:
                continue  # a job's webhooks hash, or not a job
            page.append(job_id)
            if len(page) >= self.batch:
                repaired += await self._check(page, still, streams)
                page = []
                if not self.leading():
                    return repaired
                await asyncio.sleep(self.step_pause_s)
        if page:
            repaired += await self._check(page, still, streams)
        self._suspects = still
        return repaired

    async def _check(self, job_ids: list[str], still: dict[str, Seen], streams: StreamJobs) -> int:
        now = int(time.time() * 1000)
        # Most records are final: read two short fields of each, the rest only of the others.
        async with self.redis.pipeline(transaction=False) as pipe:
            for j in job_ids:
                pipe.hmget(keys.job(j), "state", "created_ms")  # type: ignore[arg-type]  # redis-py#2399
            rows = await pipe.execute()
        open_ids = [
            j
            for j, (state, created) in zip(job_ids, rows)
            if state is not None and state not in FINAL and now - int(created or now) >= self.after_ms  # young: let it move first
        ]
        if not open_ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for j in open_ids:
                pipe.hmget(keys.job(j), *FIELDS)  # type: ignore[arg-type]  # redis-py#2399
                pipe.llen(keys.attempts(j))
            replies = await pipe.execute()
        candidates: list[Candidate] = []
        for j, row, n in zip(open_ids, replies[0::2], replies[1::2]):
            fields = dict(zip(FIELDS, row))
            if fields["state"] is None or fields["state"] in FINAL:
                continue  # finished meanwhile
            regions = [r for r in (fields["regions"] or "").split(",") if r in self.settings.region_ids]
            candidates.append(Candidate(j, keys.job_partition(j) or 0, fields, regions or list(self.settings.region_ids), int(n)))
        unheld = [c for c in candidates if not await self._held(c, now, streams)]
        repaired = 0
        for c in unheld:
            seen = self._suspects.get(c.job_id)
            if seen is not None and seen.fingerprint == c.fingerprint and now - seen.at_ms >= self.after_ms:
                repaired += await self._repair(c, now)
            elif seen is not None and seen.fingerprint == c.fingerprint:
                still[c.job_id] = seen
            else:
                still[c.job_id] = Seen(c.fingerprint, now)
        return repaired

    async def _held(self, c: Candidate, now: int, streams: StreamJobs) -> bool:
        return bool(await holders(self.redis, self.settings.region_ids, c, now, streams))

    async def _repair(self, c: Candidate, now: int) -> int:
        regions = await self._regions_to_retry(c)
        self.found.append({"job_id": c.job_id, "state": c.fields["state"], "regions": regions})
        if self.dry_run:
            return 1
        seen = job_scripts.Unheld(c.job_id, c.fields["state"], c.attempts, c.fields["repairs"] or "0")
        done = await job_scripts.repair(self.scripts.repair, seen, regions, now_ms=now)
        if done:
            JOBS_REPAIRED.inc()
            log.warning(
                "job %s was held by nothing (state %s); queued again in %s",
                c.job_id,
                c.fields["state"],
                ",".join(regions),
                extra={"job_id": c.job_id},
            )
        return 1 if done else 0

    async def _regions_to_retry(self, c: Candidate) -> list[str]:
        """Where the job's next attempt belongs: the regions that have not had their say."""
        if c.fields["mode"] == "fanout":
            async with self.redis.pipeline(transaction=False) as pipe:
                for r in c.regions:
                    pipe.hexists(keys.job(c.job_id), f"fanout:{r}")
                reported = await pipe.execute()
            left = [r for r, done in zip(c.regions, reported) if not done]
            return left or c.regions[:1]
        attempts = [orjson.loads(a) for a in await self.redis.lrange(keys.attempts(c.job_id), 0, -1)]  # type: ignore[misc]  # redis-py#2399
        if attempts:
            last = attempts[-1]
            if last.get("decision") in ("retry", "reroute") and last.get("next_region") in self.settings.region_ids:
                return [last["next_region"]]
        out = {a.get("region") for a in attempts if a.get("decision") == "failed"}
        return [r for r in c.regions if r not in out] or c.regions[:1]

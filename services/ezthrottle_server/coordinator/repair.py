"""Finds jobs that nothing holds any more and queues them again.

A job that is not final is always held by something that will move it on:
an entry in one of its regions' streams (unread, or read and not yet
acknowledged, which a live node reclaims), an entry in its partition's
delayed set, a place in a pacing queue, or a pacing lease (a running
attempt; an expired one is put back in the queue by the next grant). Each
step hands the job to the next one before letting go of it.

On one Redis server that is the whole story. On a Redis Cluster it is not:
a job's partition and its target domain's pacing keys live on different
masters, and a failover loses the last writes the failed master had not yet
replicated. If those were "the job is parked in its pacing queue" while
"its stream entry is acknowledged" survived on the other master, nothing
holds the job any more and it would stay ``queued`` forever.

The active coordinator walks every job record (``SCAN``, paced, no index to
keep up on the hot path) and checks each job that is not final against those
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..common import keys
from ..common.config import Settings
from ..common.metrics import JOBS_REPAIRED
from ..common.redisconn import Scripts
from ..common.urls import domain_of
from ..pacing.scope import SHARED, Scope
from .lease import Leadership
from .loop import CoordinatorLoop

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

FINAL = frozenset({"success", "failed", "cancelled", "expired"})
FIELDS = ("state", "created_ms", "customer", "spec", "regions", "mode", "reroutes", "tried", "live", "fanout_reported", "repairs")
STREAM_SCAN_LIMIT = 10_000  # a stream longer than this is not read: its jobs count as held


@dataclass(frozen=True)
class Seen:
    """A job found unheld: what it looked like, and when."""

    fingerprint: tuple[Any, ...]
    at_ms: int


@dataclass
class Candidate:
    job_id: str
    partition: int
    fields: dict[str, Any]
    regions: list[str]
    attempts: int = 0

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return (*(self.fields.get(f) for f in FIELDS if f != "spec"), self.attempts)


class Repairer(CoordinatorLoop):
    what = "job repair pass"

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        lease: Leadership,
        *,
        batch: int = 500,
        step_pause_s: float = 0.05,
        dry_run: bool = False,
    ) -> None:
        # A pass every quarter of repair_after_s (0.2 s to 30 s); the leader alone repairs.
        super().__init__(settings, redis, scripts, lease, poll_s=min(max(settings.repair_after_s / 4, 0.2), 30.0))
        self.batch = batch
        self.step_pause_s = step_pause_s
        self.after_ms = int(settings.repair_after_s * 1000)
        self.dry_run = dry_run  # find, but queue nothing again (ezthrottle-admin jobs repair --dry-run)
        self.found: list[dict[str, Any]] = []  # what was (or would have been) queued again
        self._suspects: dict[str, Seen] = {}

    async def poll(self) -> bool:
        self.found.clear()  # kept for one pass (what an operator's command prints)
        await self.sweep()
        return False

    async def sweep(self) -> int:
        """One pass over every job record; returns how many jobs were queued again."""
        repaired = 0
        still: dict[str, Seen] = {}
        streams: dict[tuple[int, str], set[str] | None] = {}  # each stream read once per pass, when needed
        page: list[str] = []
        async for key in self.redis.scan_iter(match=keys.JOB_KEY_PATTERN, count=self.batch, _type="hash"):
            job_id = key.rpartition(":job:")[2]
            if ":" in job_id or keys.job_partition(job_id) is None:
                continue  # a job's webhooks hash, or not a job
            page.append(job_id)
            if len(page) >= self.batch:
                repaired += await self._check(page, still, streams)
                page = []
                if not self.lease.is_leader:
                    return repaired
                await asyncio.sleep(self.step_pause_s)
        if page:
            repaired += await self._check(page, still, streams)
        self._suspects = still
        return repaired

    async def _check(self, job_ids: list[str], still: dict[str, Seen], streams: dict[tuple[int, str], set[str] | None]) -> int:
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

    async def _held(self, c: Candidate, now: int, streams: dict[tuple[int, str], set[str] | None]) -> bool:
        return bool(await self.holders(c, now, streams))

    async def holders(
        self, c: Candidate, now: int, streams: dict[tuple[int, str], set[str] | None], *, fix_ready: bool = True
    ) -> list[str]:
        """What holds the job, in every region: ``stream:<r>``, ``delayed:<r>``, ``queue:<r>``, ``lease:<r>``.

        ``streams`` caches each stream's jobs for one pass. A job that entered a
        stream after it was read is not seen there, but it is only suspected:
        the next pass reads the stream again. A stream too long to read counts
        as holding it (``stream:<r>?``). ``fix_ready``: a scope found holding
        the job is put back in its region's ready set if it went missing.
        """
        regions = self.settings.region_ids
        found: list[str] = []
        for r in regions:
            if (c.partition, r) not in streams:
                streams[(c.partition, r)] = await self._stream_jobs(c.partition, r)
            in_stream = streams[(c.partition, r)]
            if in_stream is None:
                found.append(f"stream:{r}?")
            elif c.job_id in in_stream:
                found.append(f"stream:{r}")
        try:
            domain = domain_of(orjson.loads(c.fields["spec"])["url"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return [*found, "unsendable"]  # not a job the edges can send; not ours to requeue
        scopes = [(Scope(domain, SHARED), r) for r in regions] + [(Scope(domain, c.fields["customer"] or ""), r) for r in regions]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zmscore(keys.delayed(c.partition), [f"{r}|{c.job_id}" for r in regions])
            for scope, r in scopes:
                pipe.zscore(keys.pacing_wait(scope.domain, scope.who, r), c.job_id)
                pipe.zrange(keys.pacing_running(scope.domain, scope.who, r), 0, -1)
            delayed, *pacing = await pipe.execute()
        found += [f"delayed:{r}" for r, score in zip(regions, delayed) if score is not None]
        lease_prefix = f"{c.job_id}@"
        for (scope, r), waiting, running in zip(scopes, pacing[0::2], pacing[1::2]):
            here = ([f"queue:{r}"] if waiting is not None else []) + (
                [f"lease:{r}"] if any(x.startswith(lease_prefix) for x in running) else []
            )
            if here and fix_ready:
                # Held in a queue that someone must serve: make sure its scope
                # is in the region's ready set (NX: never postponed).
                await self.redis.zadd(keys.pacing_ready(r), {scope.member: now}, nx=True)
            found += here
        return found

    async def _stream_jobs(self, partition: int, region: str) -> set[str] | None:
        """The jobs with an entry in the stream (None: too long to read; count all as held)."""
        stream = keys.region_stream(partition, region)
        if await self.redis.xlen(stream) > STREAM_SCAN_LIMIT:
            return None
        entries = await self.redis.xrange(stream, "-", "+")
        return {fields.get("job", "") for _id, fields in entries}

    async def _repair(self, c: Candidate, now: int) -> int:
        regions = await self._regions_to_retry(c)
        self.found.append({"job_id": c.job_id, "state": c.fields["state"], "regions": regions})
        if self.dry_run:
            return 1
        done = await self.scripts.repair(
            keys=[keys.job(c.job_id), keys.attempts(c.job_id), *(keys.region_stream(c.partition, r) for r in regions)],
            args=[c.job_id, now, keys.job_events(c.job_id), c.fields["state"], c.attempts, c.fields["repairs"] or "0", *regions],
        )
        if done == 1:
            JOBS_REPAIRED.inc()
            log.warning(
                "job %s was held by nothing (state %s); queued again in %s",
                c.job_id,
                c.fields["state"],
                ",".join(regions),
                extra={"job_id": c.job_id},
            )
        return int(done)

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

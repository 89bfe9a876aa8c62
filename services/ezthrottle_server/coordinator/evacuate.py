"""Evacuation: a region judged down hands the jobs waiting in it to healthy regions.

New submissions are routed around a down region (``common/routing.py``),
but work already queued in it would wait there until one of its nodes comes
back. The active coordinator moves that work, every ``poll_s`` while some
region is down:

- jobs parked in the region's pacing queues (its ready set lists their scopes);
- pacing leases of the region: once expired, or at once when the region has no
  live node and the request is safe to send twice (an unsafe POST/PATCH moves
  only once its lease has expired, and is marked ``maybe_sent``);
- entries of the region's streams, when no node of the region is alive to read
  them (live nodes park them; they are then moved from the queue). Delayed work
  for the region enters its stream when due, and moves from there.

Each job moves once: ``pacing/scripts/evict.lua`` takes it out of the queue
(only if it is still there), then ``evacuate.lua`` queues it in the target
region's stream and removes its stream entry in one step. A coordinator that
dies between the two leaves the job held by nothing, which the repair pass
finds (``coordinator/repair.py``). The target is the first region of the
configured preference order (regions.yaml) that is not down and has a live
node (a region with no node beating, say one never deployed, would hold the
job for nobody), preferring one the job has not tried yet.

What stays: a job raced across regions only loses this region's copy (the
others carry it); a fanout job's copy drops out at once (every region sends
once, and this one cannot); a ``region_policy: strict`` job waits for its
region for its retry budget (its backoffs), then drops out with
``region_unavailable``. When the region comes back it takes new work again;
jobs that moved stay where they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..common import job_scripts, keys
from ..common.config import Settings
from ..common.job_scripts import Evacuated, FinishKind, RegionResult
from ..common.metrics import JOBS_EVACUATED
from ..common.redisconn import RedisClient, Scripts
from ..common.routing import DOWN, RegionStates
from ..pacing.limiter import Limiter, PacingPolicy, job_of
from ..pacing.scope import Scope
from .lease import Leadership
from .loop import CoordinatorLoop

log = logging.getLogger(__name__)

FINAL = frozenset({"success", "failed", "cancelled", "expired"})
MOVE, OUT, STAY, CLEAR = "move", "out", "stay", "clear"


@dataclass(frozen=True)
class Held:
    """A job found in a down region, and what holds it there."""

    job_id: str
    partition: int
    entry_id: str = ""  # its stream entry, if a stream holds it
    scope: Scope | None = None  # its pacing queue, if one holds it
    lease: str = ""  # its lease, if an attempt held it
    lease_expiry_ms: float = 0.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Evacuator(CoordinatorLoop):
    what = "evacuation"

    def __init__(
        self, settings: Settings, redis: RedisClient, scripts: Scripts, lease: Leadership, poll_s: float = 0.25, batch: int = 500
    ) -> None:
        super().__init__(settings, redis, scripts, lease, poll_s=poll_s)
        self.batch = batch
        self.limiter = Limiter(redis, PacingPolicy.from_settings(settings), None, settings.region_ids)
        self.regions = RegionStates(redis, settings.region_ids)
        for a in settings.region_ids:  # every series exists before the first move (bounded: regions squared)
            for b in settings.region_ids:
                if a != b:
                    JOBS_EVACUATED.labels(a, b)

    async def poll(self) -> bool:
        return await self.step()

    async def step(self) -> bool:
        """One pass over every down region; True when it moved something (more may wait)."""
        views = await self.regions.views()
        down = [r for r in self.settings.region_ids if views[r]["state"] == DOWN]
        if not down:
            return False
        now = _now_ms()
        live = await self._live_nodes(now)
        moved = 0
        for region in down:
            # a target has a node alive to take the work: never a region no node of which beats (one never
            # deployed, or one as silent as this one), where the job would wait for nobody
            targets = [r for r in self.settings.region_ids if r != region and views[r]["state"] != DOWN and live.get(r)]
            since = int(views[region].get("since_ms") or now)
            moved += await self.evacuate(region, targets, nodes_gone=not live.get(region), down_for_ms=now - since)
        return moved > 0

    async def _live_nodes(self, now_ms: int) -> dict[str, int]:
        """Edges per region with a fresh heartbeat."""
        live: dict[str, int] = {}
        beats: dict[str, str] = await self.redis.hgetall(keys.heartbeats())  # type: ignore[misc]  # redis-py#2399
        for blob in beats.values():
            beat = orjson.loads(blob)
            if now_ms - int(beat.get("ts_ms", 0)) <= self.settings.region_silent_after_ms and beat.get("region"):
                live[beat["region"]] = live.get(beat["region"], 0) + 1
        return live

    async def evacuate(self, region: str, targets: list[str], *, nodes_gone: bool, down_for_ms: int) -> int:
        """Move what ``region`` holds; returns how many jobs left it (moved, dropped or out)."""
        held = await self._held(region, nodes_gone)
        if not held:
            return 0
        records = await self._records([h.job_id for h in held])
        decided = [(h, self._decide(h, rec, bool(targets), nodes_gone, down_for_ms)) for h, rec in zip(held, records)]
        taken = await self._take_from_queues(region, [(h, action, rec) for (h, action), rec in zip(decided, records)], nodes_gone)
        done = 0
        for (h, action), rec in zip(decided, records):
            if action == STAY or (h.scope is not None and h not in taken):
                continue
            if action == CLEAR:
                if h.entry_id:  # a stream entry of a job that is over: acknowledged and deleted
                    await self._move(h, region, region, maybe_sent=False)
                continue
            if action == OUT:
                reason = "region_down" if rec.get("mode") == "fanout" else "region_unavailable"
                await self._drop_out(h, region, reason)
            else:
                target = next((t for t in targets if t not in (rec.get("tried") or "").split(",")), targets[0])
                result = await self._move(h, region, target, maybe_sent=bool(h.lease))
                if result is Evacuated.MOVED:
                    JOBS_EVACUATED.labels(region, target).inc()
            done += 1
        if done:
            log.warning(
                "region %s is down: %d job(s) left it for %s", region, done, ", ".join(targets) or "nowhere", extra={"region": region}
            )
        return done

    async def _held(self, region: str, nodes_gone: bool) -> list[Held]:
        held: list[Held] = []
        for scope, waiting, running in await self.limiter.held_in(region, limit=self.batch):
            for job_id in waiting:
                if (p := keys.job_partition(job_id)) is not None:
                    held.append(Held(job_id, p, scope=scope))
            for lease, expiry in running:
                if (p := keys.job_partition(job_of(lease))) is not None:
                    held.append(Held(job_of(lease), p, scope=scope, lease=lease, lease_expiry_ms=float(expiry)))
        if nodes_gone:  # nobody reads the region's streams: their entries move from here
            for p in range(self.settings.partitions):
                for entry_id, fields in await self.redis.xrange(keys.region_stream(p, region), count=self.batch):
                    job_id = fields.get("job", "")
                    if keys.job_partition(job_id) == p:
                        held.append(Held(job_id, p, entry_id=entry_id))
        return held

    async def _records(self, job_ids: list[str]) -> list[dict[str, Any]]:
        fields = ("state", "mode", "live", "unsafe", "spec", "tried")
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(keys.job(job_id), list(fields))
            rows = await pipe.execute()
        return [dict(zip(fields, row)) for row in rows]

    def _decide(self, h: Held, rec: dict[str, Any], has_target: bool, nodes_gone: bool, down_for_ms: int) -> str:
        if rec.get("state") is None or rec["state"] in FINAL:
            return CLEAR
        if h.lease and not (h.lease_expiry_ms <= _now_ms() or (nodes_gone and rec.get("unsafe") != "1")):
            return STAY  # an attempt may still be under way: wait for its lease
        if rec.get("mode") == "fanout":
            return OUT
        spec = orjson.loads(rec["spec"]) if rec.get("spec") else {}
        if spec.get("region_policy") == "strict":
            return OUT if down_for_ms >= self._retry_budget_ms(spec) else STAY
        return MOVE if has_target else STAY

    def _retry_budget_ms(self, spec: dict[str, Any]) -> int:
        """How long a strict job waits for its region: the backoffs of its retries."""
        retries = int((spec.get("retry_policy") or {}).get("max_retries", 3))
        base, cap = self.settings.retry_backoff_base_s, self.settings.retry_backoff_cap_s
        return int(1000 * sum(min(cap, base * 2 ** min(i, 30)) for i in range(retries)))

    async def _take_from_queues(self, region: str, decided: list[tuple[Held, str, dict[str, Any]]], nodes_gone: bool) -> set[Held]:
        """Evict from the region's pacing queues what leaves (or is over); returns the holders taken."""
        per_scope: dict[Scope, list[Held]] = {}
        for h, action, _rec in decided:
            if h.scope is not None and action != STAY:
                per_scope.setdefault(h.scope, []).append(h)
        taken: set[Held] = set()
        for scope, hs in per_scope.items():
            waits = [h.job_id for h in hs if not h.lease]
            # A lease whose job is over, or that may go before it expires (decided above), is forced.
            leases = [(h.lease, True) for h in hs if h.lease]
            got = await self.limiter.evict(scope, region, waits, leases)
            taken.update(h for h in hs if (h.lease in got.leases if h.lease else h.job_id in got.waiting))
        return taken

    async def _move(self, h: Held, region: str, target: str, *, maybe_sent: bool) -> Evacuated:
        return await job_scripts.evacuate(
            self.scripts.evacuate, h.job_id, region=region, entry_id=h.entry_id, target=target, now_ms=_now_ms(), maybe_sent=maybe_sent
        )

    async def _drop_out(self, h: Held, region: str, reason: str) -> None:
        """The region's copy drops out (finish.lua 'out'): the job fails if no other region carries it."""
        now = _now_ms()
        attempt = {
            "region": region,
            "node": self.settings.node_id,
            "started_ms": now,
            "status_code": None,
            "latency_ms": 0.0,
            "error": reason,
            "decision": "failed",
            "evacuation": True,
        }
        out = RegionResult(h.job_id, region, FinishKind.OUT, None, attempt, reason, keys.edge_group(region), h.entry_id)
        await job_scripts.finish(self.scripts.finish, out, now_ms=now, ttl_s=self.settings.job_ttl_s)

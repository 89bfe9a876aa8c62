"""Replaying many dead letters at once: which ones (a filter), as a bulk action (``common/bulk.py``).

A filter is ``job_ids`` (at most :data:`MAX_JOB_IDS`) and/or a range of the
time the job's webhooks died, ``dead_after`` / ``dead_before`` (ms, both
exclusive, as ``GET /api/v1/jobs``'s ``created_after`` / ``created_before``),
and only letters dead before the action was created: a webhook replayed that
dies again is not replayed twice by one action. What matches is read from the
customer's dead letters (``keys.delivery_dead``, each partition), so only the
customer's own jobs are ever replayed; the call counts them exactly
(``ZCOUNT``, or one ``ZSCORE`` per id).

Each job is replayed by ``deliveries.replay`` (``delivery_replay.lua``), which
keeps a webhook replayed less than a window ago in that window. A job
replayed leaves the dead letters, so a step always takes the oldest still
dead (by ids: the next ids from the cursor), and a runner taking over from
one that died goes on where it stopped. Counters: ``jobs_done``,
``webhooks_replayed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import deliveries, keys
from .bulk import Action, StepResult, counters, progress
from .config import Settings
from .errors import ApiError
from .job_index import MAX_MS
from .metrics import WEBHOOK_REPLAYED
from .redisconn import Scripts

if TYPE_CHECKING:
    from .redisconn import RedisClient

MAX_JOB_IDS = 1000
FIELDS = frozenset({"job_ids", "dead_after", "dead_before"})


@dataclass(frozen=True)
class ReplayFilter:
    job_ids: tuple[str, ...] | None
    dead_after: int | None  # ms, exclusive
    dead_before: int | None  # ms, exclusive

    def admits(self, dead_ms: float) -> bool:
        return (self.dead_after is None or dead_ms > self.dead_after) and (self.dead_before is None or dead_ms < self.dead_before)


def _ms(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MS:
        raise ApiError("invalid_field", f"{name}: must be ms since the epoch (an integer, 0 to {MAX_MS})", field=name)
    return value


def parse_filter(body: Any) -> ReplayFilter:
    """The filter of ``POST /api/v1/deliveries/dead/replay``, or 400 naming the field. ``{}``: every dead letter."""
    if not isinstance(body, dict):
        raise ApiError("invalid_request", "body: must be a JSON object (job_ids, dead_after, dead_before)")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError("unknown_field", f"{unknown[0]}: unknown field (job_ids, dead_after, dead_before)", field=unknown[0])
    ids = body.get("job_ids")
    if ids is not None and (
        not isinstance(ids, list) or not 1 <= len(ids) <= MAX_JOB_IDS or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids)
    ):
        raise ApiError("invalid_field", f"job_ids: must be a list of 1 to {MAX_JOB_IDS} job ids", field="job_ids")
    return ReplayFilter(tuple(dict.fromkeys(ids)) if ids is not None else None, _ms(body, "dead_after"), _ms(body, "dead_before"))


KIND = "replay"
ID_PREFIX = "rpl_"
PAGE = 100  # jobs one step replays
COUNTERS = ("jobs_done", "webhooks_replayed")
_SCAN = "scan"  # the cursor of a range: the oldest dead letters still there, each time


def params(flt: ReplayFilter, created_ms: int) -> dict[str, Any]:
    """An action's params: the filter, and only letters dead before the action."""
    before = created_ms if flt.dead_before is None else min(flt.dead_before, created_ms)
    return {"job_ids": list(flt.job_ids) if flt.job_ids is not None else None, "dead_after": flt.dead_after, "dead_before": before}


def _filter(p: dict[str, Any]) -> ReplayFilter:
    return ReplayFilter(tuple(p["job_ids"]) if p["job_ids"] is not None else None, p["dead_after"], p["dead_before"])


def _bounds(flt: ReplayFilter) -> tuple[str, str]:
    low = "-inf" if flt.dead_after is None else f"({flt.dead_after}"
    high = "+inf" if flt.dead_before is None else f"({flt.dead_before}"
    return low, high


async def _dead_among(r: RedisClient, partitions: int, customer: str, flt: ReplayFilter, job_ids: Sequence[str]) -> list[str]:
    """Those of ``job_ids`` that are the customer's dead letters the filter admits, in order."""
    async with r.pipeline(transaction=False) as pipe:
        checked = []
        for job_id in job_ids:
            p = keys.job_partition(job_id)
            if p is not None and p < partitions:
                pipe.zscore(keys.delivery_dead(p, customer), job_id)
                checked.append(job_id)
        scores = await pipe.execute()
    return [job_id for job_id, score in zip(checked, scores) if score is not None and flt.admits(score)]


async def count(r: RedisClient, partitions: int, customer: str, p: dict[str, Any]) -> int:
    """How many of the customer's dead letters the action's filter matches now (exact)."""
    flt = _filter(p)
    if flt.job_ids is not None:
        return len(await _dead_among(r, partitions, customer, flt, flt.job_ids))
    low, high = _bounds(flt)
    async with r.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.zcount(keys.delivery_dead(partition, customer), low, high)
        return sum(int(n) for n in await pipe.execute())


async def _oldest(r: RedisClient, partitions: int, customer: str, flt: ReplayFilter, n: int) -> list[str]:
    low, high = _bounds(flt)
    async with r.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.zrangebyscore(keys.delivery_dead(partition, customer), low, high, start=0, num=n, withscores=True)
        rows = await pipe.execute()
    found = sorted((score, job_id) for per in rows for job_id, score in per)
    return [job_id for _score, job_id in found[:n]]


async def step(r: RedisClient, scripts: Scripts, settings: Settings, action: Action) -> StepResult:
    """Replay the next page of dead letters the action's filter matches."""
    flt = _filter(action.params)
    customer = action.customer
    if flt.job_ids is not None:
        at = int(action.cursor or 0)
        batch = flt.job_ids[at : at + PAGE]
        todo = await _dead_among(r, settings.partitions, customer, flt, batch)
        nxt: str | None = str(at + len(batch)) if at + len(batch) < len(flt.job_ids) else None
    else:
        todo = await _oldest(r, settings.partitions, customer, flt, PAGE)
        nxt = _SCAN if todo else None
    jobs = hooks = 0
    for job_id in todo:
        n = await deliveries.replay(
            r, scripts, job_id, settings.region_ids, settings.job_ttl_s, customer=customer, window_s=settings.delivery_window_s
        )
        if n is None:  # its delivery state expired: the stale letter goes, as deliveries.replay_all does
            partition = keys.job_partition(job_id) or 0
            await r.zrem(keys.delivery_dead(partition, customer), job_id)
            await r.zrem(keys.delivery_dead(partition), job_id)
        jobs += 1
        hooks += n or 0
    WEBHOOK_REPLAYED.inc(hooks)
    return StepResult({"jobs_done": jobs, "webhooks_replayed": hooks}, jobs, nxt)


def view(action_id: str, record: dict[str, str]) -> dict[str, Any]:
    """A replay as the API shows it."""
    counts = counters(record)
    return {"replay_id": action_id, "action_id": action_id, **progress(record), **{name: counts.get(name, 0) for name in COUNTERS}}

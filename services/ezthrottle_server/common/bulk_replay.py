"""Replaying many dead letters at once: which ones (a filter), and a run whose progress can be read.

A filter is ``job_ids`` (at most :data:`MAX_JOB_IDS`) and/or a range of the
time the job's webhooks died, ``dead_after`` / ``dead_before`` (ms, both
exclusive, as ``GET /api/v1/jobs``'s ``created_after`` / ``created_before``).
What matches is read from the customer's dead letters (``keys.delivery_dead``,
each partition), so only the customer's own jobs are ever replayed.

A run is one hash, ``keys.dead_replay(id)`` (TTL :data:`RUN_TTL_S`):
``customer``, ``state`` (running | done), ``matched``, ``jobs_done``,
``webhooks_replayed``, ``created_ms``, ``updated_ms``, ``finished_ms``. Each job
is replayed by ``deliveries.replay`` (``delivery_replay.lua``), which keeps a
webhook replayed less than a window ago in that window. A job replayed leaves
the dead letters, so a run cut off (its edge stopped) is finished by posting
the same filter again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import deliveries, keys
from .errors import ApiError
from .job_index import MAX_MS
from .redisconn import RedisClient, Scripts

MAX_JOB_IDS = 1000
MAX_MATCHED = 100_000  # jobs one run replays at most (post again for the rest)
RUN_TTL_S = 7 * 24 * 3600
FIELDS = frozenset({"job_ids", "dead_after", "dead_before"})
_RUN_ID = "rpl_"


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


async def matching(r: RedisClient, partitions: int, customer: str, flt: ReplayFilter) -> list[str]:
    """The customer's dead-lettered jobs the filter admits, oldest death first (at most :data:`MAX_MATCHED`)."""
    found: list[tuple[float, str]] = []
    if flt.job_ids is not None:
        for job_id in flt.job_ids:
            p = keys.job_partition(job_id)
            score = None if p is None or p >= partitions else await r.zscore(keys.delivery_dead(p, customer), job_id)
            if score is not None and flt.admits(score):
                found.append((score, job_id))
    else:
        low = "-inf" if flt.dead_after is None else f"({flt.dead_after}"
        high = "+inf" if flt.dead_before is None else f"({flt.dead_before}"
        for p in range(partitions):
            rows = await r.zrangebyscore(keys.delivery_dead(p, customer), low, high, start=0, num=MAX_MATCHED, withscores=True)
            found.extend((score, job_id) for job_id, score in rows)
    found.sort()
    return [job_id for _score, job_id in found[:MAX_MATCHED]]


async def start(r: RedisClient, customer: str, matched: int) -> str:
    """A new run's record; its id."""
    run_id = _RUN_ID + secrets.token_hex(12)
    now = int(time.time() * 1000)
    key = keys.dead_replay(run_id)
    fields = {"customer": customer, "state": "running", "matched": matched, "jobs_done": 0, "webhooks_replayed": 0}
    await r.hset(key, mapping={**fields, "created_ms": now, "updated_ms": now})  # type: ignore[misc]  # redis-py#2399
    await r.expire(key, RUN_TTL_S)
    return run_id


async def run(
    r: RedisClient,
    scripts: Scripts,
    run_id: str,
    job_ids: Sequence[str],
    regions: Sequence[str],
    ttl_s: int,
    window_s: float,
    customer: str,
) -> int:
    """Replay each job's dead webhooks, counting progress on the run; the webhooks replayed."""
    key = keys.dead_replay(run_id)
    total = 0
    for job_id in job_ids:
        n = await deliveries.replay(r, scripts, job_id, regions, ttl_s, customer=customer, window_s=window_s) or 0
        total += n
        await r.hincrby(key, "jobs_done", 1)  # type: ignore[misc]  # redis-py#2399
        if n:
            await r.hincrby(key, "webhooks_replayed", n)  # type: ignore[misc]
    now = int(time.time() * 1000)
    await r.hset(key, mapping={"state": "done", "updated_ms": now, "finished_ms": now})  # type: ignore[misc]
    return total


async def view(r: RedisClient, run_id: str, customer: str) -> dict[str, Any] | None:
    """A run as the API shows it; None for an unknown run or another customer's."""
    if not run_id.startswith(_RUN_ID) or len(run_id) > 64:
        return None
    data: dict[str, str] = await r.hgetall(keys.dead_replay(run_id))  # type: ignore[misc]  # redis-py#2399
    if not data or data.get("customer") != customer:
        return None
    finished = data.get("finished_ms")
    return {
        "replay_id": run_id,
        "state": data.get("state", "running"),
        "matched": int(data.get("matched") or 0),
        "jobs_done": int(data.get("jobs_done") or 0),
        "webhooks_replayed": int(data.get("webhooks_replayed") or 0),
        "created_at_ms": int(data.get("created_ms") or 0),
        "finished_at_ms": int(finished) if finished else None,
    }

"""What holds a job that is not final, in every region.

A job that is not final is always held by something that will move it on:
an entry in one of its regions' streams (unread, or read and not yet
acknowledged, which a live node reclaims), an entry in its partition's
delayed set, a place in a pacing queue, or a pacing lease (a running
attempt). The coordinator's repair pass (``coordinator/repair.py``) queues
again the jobs it finds held by nothing; ``ezthrottle-admin jobs show``
prints a job's holders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import keys
from .urls import domain_of
from .workflows import FINAL_STATES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .redisconn import RedisClient

FINAL = FINAL_STATES
FIELDS = ("state", "created_ms", "customer", "spec", "regions", "mode", "reroutes", "tried", "live", "fanout_reported", "repairs")
STREAM_SCAN_LIMIT = 10_000  # a stream longer than this is not read: its jobs count as held

StreamJobs = dict[tuple[int, str], "set[str] | None"]  # (partition, region) -> the jobs in its stream, read once per pass


@dataclass
class Candidate:
    """A job record's ``FIELDS`` as read, with its attempts' count."""

    job_id: str
    partition: int
    fields: dict[str, Any]
    regions: list[str]
    attempts: int = 0

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return (*(self.fields.get(f) for f in FIELDS if f != "spec"), self.attempts)


async def holders(
    redis: RedisClient, regions: Sequence[str], c: Candidate, now: int, streams: StreamJobs, *, fix_ready: bool = True
) -> list[str]:
    """What holds the job, in every region: ``stream:<r>``, ``delayed:<r>``, ``queue:<r>``, ``lease:<r>``.

    ``streams`` caches each stream's jobs for one pass. A job that entered a
    stream after it was read is not seen there, but it is only suspected:
    the next pass reads the stream again. A stream too long to read counts
    as holding it (``stream:<r>?``). ``fix_ready``: a scope found holding
    the job is put back in its region's ready set if it went missing.
    """
    found: list[str] = []
    for r in regions:
        if (c.partition, r) not in streams:
            streams[(c.partition, r)] = await stream_jobs(redis, c.partition, r)
        in_stream = streams[(c.partition, r)]
        if in_stream is None:
            found.append(f"stream:{r}?")
        elif c.job_id in in_stream:
            found.append(f"stream:{r}")
    try:
        domain = domain_of(orjson.loads(c.fields["spec"])["url"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return [*found, "unsendable"]  # not a job the edges can send; not ours to requeue
    whos = [keys.SHARED_SCOPE, c.fields["customer"] or ""]
    credential = await _credential_scope(redis, c.fields["spec"])
    if credential != keys.SHARED_SCOPE:
        whos.append(credential)  # a domain with one limit per credential (scope: credential)
    scopes = [(who, r) for who in whos for r in regions]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zmscore(keys.delayed(c.partition), [f"{r}|{c.job_id}" for r in regions])
        for who, r in scopes:
            pipe.zscore(keys.pacing_wait(domain, who, r), c.job_id)
            pipe.zrange(keys.pacing_running(domain, who, r), 0, -1)
        delayed, *pacing = await pipe.execute()
    found += [f"delayed:{r}" for r, score in zip(regions, delayed) if score is not None]
    lease_prefix = f"{c.job_id}@"
    for (who, r), waiting, running in zip(scopes, pacing[0::2], pacing[1::2]):
        leased = any(x.startswith(lease_prefix) for x in running)
        here = ([f"queue:{r}"] if waiting is not None else []) + ([f"lease:{r}"] if leased else [])
        if here and fix_ready:
            # Held in a queue that someone must serve: make sure its scope
            # is in the region's ready set (NX: never postponed).
            await redis.zadd(keys.pacing_ready(r), {keys.pacing_ready_member(domain, who): now}, nx=True)
        found += here
    return found


async def _credential_scope(redis: RedisClient, spec: str) -> str:
    """The scope of the job's credential, were its domain per credential (pacing/scope.py); SHARED_SCOPE if it has none."""
    headers = orjson.loads(spec).get("headers")
    if not isinstance(headers, dict) or not any(k.lower() == "authorization" for k in headers):
        return keys.SHARED_SCOPE
    secret = await redis.get(keys.pacing_credential_key())
    return keys.credential_scope(bytes.fromhex(secret), headers) if secret else keys.SHARED_SCOPE


async def stream_jobs(redis: RedisClient, partition: int, region: str) -> set[str] | None:
    """The jobs with an entry in the stream (None: too long to read; count all as held)."""
    stream = keys.region_stream(partition, region)
    if await redis.xlen(stream) > STREAM_SCAN_LIMIT:
        return None
    entries = await redis.xrange(stream, "-", "+")
    return {fields.get("job", "") for _id, fields in entries}

"""Each customer's jobs, newest first: the index behind ``GET /api/v1/jobs`` and ``GET /api/v1/domains/{host}``.

Layout. Per partition and customer, one sorted set, ``keys.job_index(p,
customer)``, under the partition's hash tag: the script that creates a job
(``submit.lua``/``accept.lua`` through ``_submit.lua``, ``spawn_child.lua``
for a workflow child) adds it in the same step as its record, so a job is
listed exactly when it exists. Every member has the score 0 and reads::

    <created ms, 13 digits>|<job id>|<domain (host:port)>

so the set's lexicographic order is creation order, ties broken by job id,
and every member is a *position*: ``ZREVRANGEBYLEX`` from just below a member
goes on exactly where a page stopped, whatever was added or removed since.
Time filters are lex bounds; the domain filter reads the member alone.

Cluster safety. A listing reads each partition's set on its own (one key, one
slot per command) and merges them here, in Python, by member: the members of
every partition compare in the same order. Records are read with one HMGET per
job, each in its job's slot. Nothing spans two slots.

Expiry. Records of finished jobs expire (``job_ttl_s``); an entry can outlive
its record. Entries are dropped three ways: a listing that finds a record gone
removes its entry (ZREM, same slot); each write drops the entries older than
:func:`ttl_s` (no job lives that long in practice: its ``retry_at`` at most
``retry_at_horizon_ms`` ahead, then ``job_ttl_s`` once final); and the set
itself expires :func:`ttl_s` after the customer's last job in the partition.

Jobs accepted before the index existed are not in it: :func:`reindex`
(``ezthrottle-admin jobs reindex``) adds them, once, from their records.

Bounds. A request reads at most :func:`scan_budget` entries (and the records
of the candidates among them): a selective filter over many jobs answers a
short or empty page with a cursor to go on from, never a long scan.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import keys
from .config import Settings
from .urls import domain_of

if TYPE_CHECKING:
    from .redisconn import RedisClient

MS_DIGITS = 13  # ms since the epoch, zero-padded: lexicographic order is numeric order (until the year 2286)
MAX_MS = 10**MS_DIGITS - 1
_MEMBER = re.compile(r"^\d{13}\|job_\d{10,16}_[0-9a-f]{16}p\d{1,4}\|[^|]*$")
_CURSOR_PREFIX = "v1:"

# The record fields a listing shows (HMGET, in this order).
FIELDS = (
    "customer", "state", "spec", "created_ms", "started_ms", "finished_ms", "idempotent_key", "regions", "winner",
    "error", "root", "parent", "relation", "chain",
)  # fmt: skip
NOT_FINAL = frozenset({"queued", "scheduled", "running"})


def member(created_ms: int, job_id: str, domain: str) -> str:
    """A job's entry in its customer's index."""
    return f"{created_ms:0{MS_DIGITS}d}|{job_id}|{domain}"


@dataclass(frozen=True)
class Entry:
    member: str
    created_ms: int
    job_id: str
    domain: str

    @classmethod
    def parse(cls, raw: str) -> Entry:
        ms, job_id, domain = raw.split("|", 2)
        return cls(raw, int(ms), job_id, domain)


def ttl_s(settings: Settings) -> int:
    """How long an index outlives its customer's last job there, and the age past which entries are dropped."""
    return settings.job_ttl_s + settings.retry_at_horizon_ms // 1000


def too_old(now_ms: int, ttl: int) -> str:
    """ZREMRANGEBYLEX's upper bound (``-`` to it) for the entries older than ``ttl`` seconds."""
    return f"({max(0, now_ms - ttl * 1000):0{MS_DIGITS}d}"


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    """The position a cursor holds, or None when it is not one of ours."""
    if len(cursor) > 1024:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    position = text.removeprefix(_CURSOR_PREFIX)
    return position if text.startswith(_CURSOR_PREFIX) and _MEMBER.match(position) else None


def scan_budget(limit: int) -> int:
    """The most index entries one listing request reads."""
    return 10 * max(limit, 20)


# -- reading ---------------------------------------------------------------------------------


async def newest_first(
    redis: RedisClient,
    customer: str,
    partitions: Sequence[int],
    *,
    below: str | None = None,
    created_after: int | None = None,
    created_before: int | None = None,
    batch: int = 100,
) -> AsyncGenerator[Entry, None]:
    """The customer's entries in ``partitions``, newest first, merged.

    ``below``: only entries before this position (a member; exclusive).
    ``created_after`` / ``created_before``: ms, both exclusive. Each partition
    is read ``batch`` entries at a time, when its turn comes.
    """
    high = "+"
    if created_before is not None:
        high = "(" + f"{max(0, min(created_before, MAX_MS)):0{MS_DIGITS}d}"
    if below is not None and (high == "+" or below < high[1:]):
        high = "(" + below
    low = "-" if created_after is None or created_after < 0 else "[" + f"{min(created_after + 1, MAX_MS):0{MS_DIGITS}d}"
    if created_after is not None and created_after >= MAX_MS:
        return
    index_keys = [keys.job_index(p, customer) for p in partitions]
    async with redis.pipeline(transaction=False) as pipe:
        for key in index_keys:
            pipe.zrevrangebylex(key, high, low, start=0, num=batch)
        first = await pipe.execute()
    buffers: list[list[str]] = [list(reversed(rows)) for rows in first]  # popped from the end: newest last
    more = [len(rows) == batch for rows in first]
    while True:
        best = -1
        for i, buf in enumerate(buffers):
            if not buf and more[i]:  # go on below this partition's oldest entry read
                rows = await redis.zrevrangebylex(index_keys[i], "(" + first[i][-1], low, start=0, num=batch)
                more[i] = len(rows) == batch
                buf.extend(reversed(rows))
                first[i] = rows
            if buf and (best < 0 or buf[-1] > buffers[best][-1]):
                best = i
        if best < 0:
            return
        yield Entry.parse(buffers[best].pop())


@dataclass
class JobFilter:
    """What ``GET /api/v1/jobs`` keeps; every part optional, all of them must match."""

    statuses: frozenset[str] = frozenset()
    domain: str | None = None
    created_after: int | None = None
    created_before: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    root_job_id: str | None = None

    def matches_entry(self, entry: Entry) -> bool:
        return self.domain is None or entry.domain == self.domain

    def matches(self, job_id: str, record: dict[str, Any], spec: dict[str, Any]) -> bool:
        if self.statuses and record.get("state") not in self.statuses:
            return False
        if self.root_job_id is not None and job_id != self.root_job_id and record.get("root") != self.root_job_id:
            return False
        if self.metadata:
            meta = spec.get("metadata") or {}
            if not isinstance(meta, dict):
                return False
            for name, wanted in self.metadata.items():
                if name not in meta or _as_text(meta[name]) != wanted:
                    return False
        return True


def _as_text(value: Any) -> str | None:
    """A metadata value as a query string gives it: strings as they are, other scalars as JSON (3, true, null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return None
    return orjson.dumps(value).decode()


@dataclass
class Page:
    jobs: list[dict[str, Any]]
    next_cursor: str | None


async def list_jobs(
    redis: RedisClient,
    partitions: int,
    customer: str,
    flt: JobFilter,
    *,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """One page of the customer's jobs matching ``flt``, newest first (see the module docstring).

    ``next_cursor`` is None once nothing is left to read; a page may be short
    (even empty) with a cursor when the scan budget ran out first.
    """
    parts: Sequence[int] = range(partitions)
    created_after = flt.created_after
    if flt.root_job_id is not None:  # a workflow lives in its root's partition, created after it
        root_partition = keys.job_partition(flt.root_job_id)
        if root_partition is None or root_partition >= partitions:
            return Page([], None)
        parts = [root_partition]
        [row] = await _records(redis, [flt.root_job_id])
        root = dict(zip(FIELDS, row))
        if root["customer"] == customer and root["created_ms"]:
            created_after = max(created_after if created_after is not None else -1, int(root["created_ms"]) - 1)
    entries = newest_first(
        redis, customer, parts, below=cursor, created_after=created_after, created_before=flt.created_before, batch=min(limit + 1, 201)
    )
    budget = scan_budget(limit)
    jobs: list[dict[str, Any]] = []
    stale: list[Entry] = []
    scanned = 0
    position: str | None = None  # every entry down to this one is decided
    more = True  # entries may follow the position
    try:
        while more and len(jobs) < limit and scanned < budget:
            chunk: list[Entry] = []
            last: str | None = None
            while len(chunk) < max(limit - len(jobs), 32) and scanned < budget:
                entry = await anext(entries, None)
                if entry is None:
                    more = False
                    break
                scanned += 1
                last = entry.member
                if flt.matches_entry(entry):
                    chunk.append(entry)
            full_at: int | None = None
            if chunk:
                rows = await _records(redis, [e.job_id for e in chunk])
                for i, (entry, row) in enumerate(zip(chunk, rows)):
                    record = dict(zip(FIELDS, row))
                    if record["customer"] is None:  # expired: its entry goes too
                        stale.append(entry)
                    elif record["customer"] == customer:
                        spec = orjson.loads(record["spec"]) if record["spec"] else {}
                        if flt.matches(entry.job_id, record, spec):
                            jobs.append(summary(entry, record, spec))
                            if len(jobs) == limit:
                                full_at = i
                                break
            if full_at is not None:
                position = chunk[full_at].member
                if full_at == len(chunk) - 1 and more:
                    more = await anext(entries, None) is not None  # is anything left after it?
                elif full_at < len(chunk) - 1:
                    more = True
            elif last is not None:
                position = last
    finally:
        await entries.aclose()
    await _drop(redis, customer, stale)
    if not more or position is None:
        return Page(jobs, None)
    return Page(jobs, encode_cursor(position))


async def _records(redis: RedisClient, job_ids: Sequence[str]) -> list[list[Any]]:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), list(FIELDS))
        return list(await pipe.execute())


async def _drop(redis: RedisClient, customer: str, stale: Sequence[Entry]) -> None:
    if not stale:
        return
    by_key: dict[str, list[str]] = {}
    for entry in stale:
        p = keys.job_partition(entry.job_id)
        if p is not None:
            by_key.setdefault(keys.job_index(p, customer), []).append(entry.member)
    async with redis.pipeline(transaction=False) as pipe:
        for key, members in by_key.items():
            pipe.zrem(key, *members)
        await pipe.execute()


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def summary(entry: Entry, record: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A job as a listing shows it (``GET /api/v1/jobs/{id}`` has the rest: attempts, result, webhooks)."""
    in_workflow = record.get("chain") == "1" or bool(record.get("parent"))
    return {
        "job_id": entry.job_id,
        "status": record.get("state"),
        "created_at_ms": entry.created_ms,
        "started_at_ms": _int_or_none(record.get("started_ms")),
        "finished_at_ms": _int_or_none(record.get("finished_ms")),
        "url": spec.get("url"),
        "method": spec.get("method"),
        "domain": entry.domain,
        "metadata": spec.get("metadata") or {},
        "idempotent_key": record.get("idempotent_key"),
        "regions": [r for r in (record.get("regions") or "").split(",") if r],
        "winner_region": record.get("winner") or None,
        "error": record.get("error") or None,
        "workflow": {
            "root_job_id": record.get("root") or entry.job_id,
            "parent_job_id": record.get("parent") or None,
            "relation": record.get("relation") or None,
        }
        if in_workflow
        else None,
    }


# -- counting, for a domain ---------------------------------------------------------------------


@dataclass
class DomainCounts:
    queued: int = 0  # queued or scheduled (retry_at, backoff)
    in_flight: int = 0  # running: an attempt under way
    complete: bool = True  # False: the budget ran out first, the counts are lower bounds


async def count_for_domain(
    redis: RedisClient, partitions: int, customer: str, domain: str, *, budget: int = 5000, batch: int = 500
) -> DomainCounts:
    """The customer's jobs not yet final for ``domain``, from its index.

    Each partition is read newest first (jobs not final are mostly recent)
    until it has shown as many jobs not final as the partition counts for the
    customer (``keys.queued``, the admission counter), or it ends, or its
    share of ``budget`` entries is read; every entry's state is read (HMGET),
    of this domain's or not, to know when to stop.
    """
    out = DomainCounts()
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.hget(keys.queued(p), customer)
        open_counts = [int(n or 0) for n in await pipe.execute()]
    share = max(batch, budget // max(partitions, 1))
    for p, open_jobs in enumerate(open_counts):
        if open_jobs <= 0:
            continue
        seen_open, read = 0, 0
        below = "+"
        while seen_open < open_jobs:
            if read >= share:
                out.complete = False
                break
            rows = await redis.zrevrangebylex(keys.job_index(p, customer), below, "-", start=0, num=min(batch, share - read))
            if not rows:
                break
            read += len(rows)
            below = "(" + rows[-1]
            entries = [Entry.parse(r) for r in rows]
            async with redis.pipeline(transaction=False) as pipe:
                for e in entries:
                    pipe.hget(keys.job(e.job_id), "state")
                states = await pipe.execute()
            for e, state in zip(entries, states):
                if state in NOT_FINAL:
                    seen_open += 1
                    if e.domain == domain:
                        if state == "running":
                            out.in_flight += 1
                        else:
                            out.queued += 1
    return out


# -- jobs written before the index ------------------------------------------------------------


async def reindex(redis: RedisClient, settings: Settings, *, batch: int = 500) -> int:
    """Index every job record its customer's index lacks (jobs accepted before the index existed).

    Idempotent: a member is the same whoever writes it. Reads every record
    (SCAN, every master of a cluster); one ZADD and EXPIRE per job, each in the
    job's own slot. Returns how many entries were added.
    """
    ttl = ttl_s(settings)
    added = 0
    pending: list[str] = []
    async for key in redis.scan_iter(match=keys.JOB_KEY_PATTERN, count=1000):
        job_id = key.rpartition(":job:")[2]
        if keys.job_partition(job_id) is None:  # a job's attempts, webhooks, lease...
            continue
        pending.append(job_id)
        if len(pending) >= batch:
            added += await _index_records(redis, pending, ttl)
            pending = []
    if pending:
        added += await _index_records(redis, pending, ttl)
    return added


async def _index_records(redis: RedisClient, job_ids: Sequence[str], ttl: int) -> int:
    rows = await _records(redis, job_ids)
    writes: list[tuple[str, str]] = []
    for job_id, row in zip(job_ids, rows):
        record = dict(zip(FIELDS, row))
        partition = keys.job_partition(job_id)
        if not record["customer"] or not record["created_ms"] or partition is None:
            continue
        try:
            domain = domain_of(orjson.loads(record["spec"])["url"])
        except (ValueError, KeyError, TypeError):
            continue
        writes.append((keys.job_index(partition, record["customer"]), member(int(record["created_ms"]), job_id, domain)))
    if not writes:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for index, entry in writes:
            pipe.zadd(index, {entry: 0})
            pipe.expire(index, ttl)
        answers = await pipe.execute()
    return sum(int(n) for n in answers[0::2])

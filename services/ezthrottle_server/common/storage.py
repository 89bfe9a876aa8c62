"""Redis memory per customer: a budget on the bytes its jobs hold, so that no customer can fill Redis for the others.

Admission sheds every customer's new jobs once Redis is nearly full
(``edge/admission.py``). Without a budget per customer, one customer's many or
large jobs (and the results kept for ``EZT_JOB_TTL_S``) would get it there
alone. ``EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER`` bounds what each customer's
jobs hold:

- **Open jobs.** ``submit.lua`` counts a new job's record (its fields and values,
  as written) in ``<customer>|bytes`` of its partition's ``queued`` hash, in
  the step that writes it, and refuses the job (nothing written) when that
  would pass what is left of the budget: 429 ``overloaded``, reason
  ``bytes_per_customer``.
- **Ended jobs.** When the job ends (``finish.lua``, ``_end_job.lua``), its bytes
  leave that count and go, with its result's (twice with webhooks: their payload
  repeats it) and its last attempt's, to the partition's *kept* bucket of that
  moment (``keys.kept_bytes``): the record stays until it expires,
  ``EZT_JOB_TTL_S`` later. A bucket is an eighth of that TTL wide (at least a
  second); the kept bytes are the sum of the last :data:`KEPT_BUCKETS` + 1
  buckets, which covers every record not yet expired (it may count one
  bucket's width past the expiry, never less).

What the script is told is left = budget - kept bytes (every partition) -
open bytes of the other partitions. This module reads them at most once a
second per customer (one pipelined read for all the waiters), and adds the
jobs this process creates as it creates them. The script checks the job's
own partition exactly: its open bytes, plus what ended there since the read
(``<customer>|ended`` counts every byte its ended jobs added to the kept
ones, and the read's value is passed along), so ending or cancelling jobs
frees nothing until their records expire. A job ending in another partition
moves bytes from that partition's open (read) to kept (not yet read): the
sum stays. With one partition (one Redis server, the default) the check is
therefore exact. With several (a cluster), a customer may pass its budget by
what *other* processes accept for it in other partitions within the second
their views are stale (at most one budget per process, in one burst: after
it, every view counts it), and by the results of its jobs that ended in
other partitions within that second. It never grows past that: nothing frees
bytes before the records expire.

Counted: records written by submissions (the API and schedules). Not counted:
workflow children spawned by the coordinator (their parent's spec holds
their definitions), the attempt log of attempts before the last (at most the
retry policy's count of entries of a few hundred bytes), Redis's own overhead
per key (``bench.memory``: about 1.4 KB for a job with a 200-byte body).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import keys
from .config import Settings
from .redisconn import info_per_master

if TYPE_CHECKING:
    from .redisconn import RedisClient

KEPT_BUCKETS = 8  # buckets per job TTL: a kept record is counted at most TTL / 8 past its expiry
FRESH_S = 1.0  # a customer's usage is read at most this often per process
AUTO = -1  # EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER unset in the production profile: a share of the memory ceiling
AUTO_SHARE = 0.25  # ... this share of what admission sheds at (edge/admission.py memory_ceiling)
CEILING_FRESH_S = 10.0  # the memory ceiling behind AUTO, read at most this often
MAX_CACHED = 10_000  # customers whose usage is cached at once (the oldest go first)
MAXMEMORY_SHARE = 0.9  # admission sheds at this share of Redis's maxmemory ...
MACHINE_MEMORY_SHARE = 0.8  # ... or of its machine's memory, when it has none


def bucket_width_ms(ttl_s: int) -> int:
    return max(1000, math.ceil(ttl_s * 1000 / KEPT_BUCKETS))


def kept_bucket(ttl_s: int, now_ms: int) -> str:
    """The kept bucket a job ending at ``now_ms`` counts in (``keys.kept_bytes``'s ``bucket``)."""
    width = bucket_width_ms(ttl_s)
    return f"{width}:{now_ms // width}"


def kept_key(partition: int, ttl_s: int, now_ms: int) -> str:
    return keys.kept_bytes(partition, kept_bucket(ttl_s, now_ms))


def live_buckets(ttl_s: int, now_ms: int) -> list[str]:
    """The buckets whose jobs may still have records: the current one and the :data:`KEPT_BUCKETS` before it."""
    width = bucket_width_ms(ttl_s)
    now = now_ms // width
    back = math.ceil(ttl_s * 1000 / width)
    return [f"{width}:{i}" for i in range(now - back, now + 1)]


def open_field(customer: str) -> str:
    """The field of ``keys.queued`` with the bytes of the customer's open jobs (customer ids have no '|')."""
    return f"{customer}|bytes"


def ended_field(customer: str) -> str:
    """The field of ``keys.queued`` counting the bytes the customer's ended jobs added to the kept ones, ever."""
    return f"{customer}|ended"


def machine_memory_bytes() -> int:
    """This machine's physical memory (0 when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        return 0


def memory_ceiling(info: dict[str, object]) -> int:
    """The memory use above which a master sheds new work, from its ``INFO memory`` (0: none)."""
    maxmemory = int(str(info.get("maxmemory", 0)))
    if maxmemory:
        return int(maxmemory * MAXMEMORY_SHARE)
    machine = int(str(info.get("total_system_memory", 0))) or machine_memory_bytes()
    return int(machine * MACHINE_MEMORY_SHARE)


@dataclass(slots=True)
class Room:
    """What ``submit.lua`` is told of the customer's budget in one partition."""

    left: int = -1  # bytes it may still add there (-1: no budget)
    ended: int = 0  # the partition's '<customer>|ended' as read: the script counts what ended there since


NO_BUDGET = Room()


class ByteBudget:
    """What is left of each customer's byte budget, for ``submit.lua`` (-1: no budget)."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self._usage: dict[str, _Usage] = {}
        self._reading: dict[str, asyncio.Future[_Usage]] = {}
        self._ceiling: tuple[float, int] | None = None  # (read at, the fullest master's ceiling), for AUTO

    @property
    def known(self) -> int:
        """The budget as last worked out (0: none, or not yet read)."""
        setting = self.settings.admission_max_bytes_per_customer
        if setting != AUTO:
            return max(0, setting)
        return int(self._ceiling[1] * AUTO_SHARE) if self._ceiling is not None else 0

    async def budget(self) -> int:
        """The budget per customer in bytes, or 0: none (AUTO: the memory ceiling read again every CEILING_FRESH_S)."""
        now = time.monotonic()
        if self.settings.admission_max_bytes_per_customer == AUTO and (self._ceiling is None or now - self._ceiling[0] > CEILING_FRESH_S):
            ceiling = self.settings.admission_max_redis_memory_bytes
            if not ceiling:
                ceiling = min(memory_ceiling(info) for info in await info_per_master(self.redis, "memory"))
            self._ceiling = (now, ceiling)
        return self.known

    async def room(self, customer: str, partition: int) -> Room:
        """What the customer may still add in ``partition``."""
        budget = await self.budget()
        if not budget:
            return NO_BUDGET
        usage = await self._read(customer)
        others = sum(b for p, b in enumerate(usage.open) if p != partition)
        return Room(max(0, budget - usage.kept - others), usage.ended[partition])

    def added(self, customer: str, partition: int, size: int) -> None:
        """This process created a job of ``size`` bytes: its cached usage says so at once (others' in a second)."""
        cached = self._usage.get(customer)
        if cached is not None and 0 <= partition < len(cached.open):
            cached.open[partition] += size

    async def usage(self, customer: str) -> int:
        """The customer's bytes: its open jobs' and its kept ones', as this process's view has them (at most a
        second old: asking often costs Redis no more than submitting does)."""
        usage = await self._read(customer)
        return usage.kept + sum(usage.open)

    async def _read(self, customer: str) -> _Usage:
        cached = self._usage.get(customer)
        if cached is not None and time.monotonic() - cached.at < FRESH_S:
            return cached
        reading = self._reading.get(customer)
        if reading is None:
            reading = asyncio.ensure_future(self._fetch(customer))
            self._reading[customer] = reading
            reading.add_done_callback(lambda _f: self._reading.pop(customer, None))
        return await asyncio.shield(reading)

    async def _fetch(self, customer: str) -> _Usage:
        settings = self.settings
        buckets = live_buckets(settings.job_ttl_s, int(time.time() * 1000))
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(settings.partitions):
                pipe.hmget(keys.queued(p), [open_field(customer), ended_field(customer)])
                for b in buckets:
                    pipe.hget(keys.kept_bytes(p, b), customer)
            got = await pipe.execute()
        per = 1 + len(buckets)
        usage = _Usage(
            at=time.monotonic(),
            kept=sum(int(v or 0) for p in range(settings.partitions) for v in got[p * per + 1 : (p + 1) * per]),
            open=[int(got[p * per][0] or 0) for p in range(settings.partitions)],
            ended=[int(got[p * per][1] or 0) for p in range(settings.partitions)],
        )
        if len(self._usage) >= MAX_CACHED:
            self._usage.clear()
        self._usage[customer] = usage
        return usage


@dataclass
class _Usage:
    """A customer's bytes as read (``at``: monotonic): kept (every partition), and per partition open and ended."""

    at: float
    kept: int
    open: list[int]
    ended: list[int]

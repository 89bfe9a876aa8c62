"""Admission control: shed new work before Redis runs out of room, or one
customer fills it.

Accepted work is never dropped; when a ceiling is crossed, *new* submissions
get 429 ``overloaded`` with a ``Retry-After`` that doubles on each
consecutive rejection of the same customer (1 s, 2 s, 4 s … capped), and
starts over once one of its submissions is accepted. Three ceilings:

- **Redis memory**: ``EZT_ADMISSION_MAX_REDIS_MEMORY_BYTES`` if set (above 0),
  else 90% of Redis's own ``maxmemory`` when it has one, else 80% of the
  memory of the machine Redis runs on (``total_system_memory``, or this
  machine's when Redis does not say): a Redis without ``maxmemory`` grows
  until the machine runs out. On a cluster, per master, and the fullest
  master decides. Memory is read once
  a second by a background task, never on the request path. ``/readyz`` and
  ``/healthz`` report this state, so a load balancer can steer traffic away.
- **Bytes per customer**: ``EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER``, what the
  records of a customer's jobs (and its finished jobs' results, until they
  expire) may hold of Redis (``common/storage.py``), checked by ``submit.lua``
  like the next ceiling. Unset in the production profile: a quarter of the
  memory ceiling above.
- **Jobs queued per customer**: ``EZT_ADMISSION_MAX_QUEUED_PER_CUSTOMER``
  (0 = off) jobs not yet final. ``submit.lua`` counts a job when it creates
  it and refuses one over the ceiling in the same step (``keys.queued``, per
  partition); ``finish.lua`` takes it off when the job is final. With several
  partitions the ceiling left for one is the ceiling minus the others' counts,
  as for quotas (``common/acceptance.py`` queued_left).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..common.config import Settings
from ..common.errors import ApiError
from ..common.loops import run_every
from ..common.metrics import ADMISSION_REJECTED
from ..common.redisconn import info_per_master
from ..common.storage import ByteBudget, memory_ceiling

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

RETRY_AFTER_BASE_S = 1
RETRY_AFTER_CAP_S = 60


class Admission:
    def __init__(self, settings: Settings, redis: RedisClient, refresh_s: float = 1.0) -> None:
        self.settings = settings
        self.redis = redis
        self.refresh_s = refresh_s
        self.used_bytes: int | None = None
        self.limit_bytes: int = settings.admission_max_redis_memory_bytes
        self._streaks: dict[str, int] = {}
        self.budget = ByteBudget(settings, redis)  # each customer's bytes of Redis (common/storage.py)

    async def refresh(self) -> None:
        fullest: tuple[float, int, int] | None = None  # (share of its ceiling, used, ceiling) of the fullest master
        for info in await info_per_master(self.redis, "memory"):
            used = int(info.get("used_memory", 0))
            limit = self.settings.admission_max_redis_memory_bytes or memory_ceiling(info)
            node = (used / limit if limit else 0.0, used, limit)
            if fullest is None or node > fullest:
                fullest = node
        if fullest is not None:
            _share, self.used_bytes, self.limit_bytes = fullest

    async def run(self) -> None:
        await run_every(self.refresh_s, self.refresh, log=log, failed="could not read redis memory use", first_now=True)

    @property
    def accepting(self) -> bool:
        return not (self.limit_bytes and self.used_bytes is not None and self.used_bytes >= self.limit_bytes)

    def state(self) -> dict[str, Any]:
        return {
            "accepting": self.accepting,
            "reason": None if self.accepting else "redis memory use is over the admission ceiling",
            "redis_used_memory_bytes": self.used_bytes,
            "redis_memory_limit_bytes": self.limit_bytes or None,
            "max_queued_per_customer": self.settings.admission_max_queued_per_customer or None,
            "max_bytes_per_customer": self.budget.known or None,
        }

    def _shed(self, customer: str, reason: str, why: str) -> ApiError:
        streak = self._streaks.get(customer, 0)
        self._streaks[customer] = streak + 1
        if len(self._streaks) > 100_000:
            self._streaks.clear()
        retry_after = min(RETRY_AFTER_CAP_S, RETRY_AFTER_BASE_S * 2 ** min(streak, 16))
        ADMISSION_REJECTED.labels(reason).inc()
        return ApiError(
            "overloaded",
            f"not accepting new jobs: {why}; accepted jobs are safe. Retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    def check(self, customer: str) -> None:
        """Raise 429 ``overloaded`` when new work must be shed."""
        if self.accepting:
            return
        raise self._shed(
            customer,
            "redis_memory",
            f"Redis memory use ({self.used_bytes} bytes) is over the ceiling ({self.limit_bytes} bytes)",
        )

    def queue_full(self, customer: str) -> ApiError:
        """The 429 for a submission refused by the ceiling on jobs queued per customer."""
        ceiling = self.settings.admission_max_queued_per_customer
        return self._shed(customer, "queued_per_customer", f"this API key's customer has {ceiling} jobs not yet final (the ceiling)")

    def bytes_full(self, customer: str, budget: int) -> ApiError:
        """The 429 for a submission refused by the customer's byte budget (common/storage.py)."""
        return self._shed(
            customer,
            "bytes_per_customer",
            f"this API key's customer's jobs hold its budget of {budget} bytes of Redis memory "
            "(the records of its jobs not yet final, and of its finished ones until they expire)",
        )

    def accepted(self, customer: str) -> None:
        if self._streaks:
            self._streaks.pop(customer, None)

"""Quota checks on submit and the usage view (see common/quotas.py).

One partition (one Redis, the default): ``submit.lua`` checks the cap and
counts the job in the same step as it creates it, so the count is exact and a
duplicate costs nothing.

Several partitions (a Redis Cluster): a customer's jobs land in every
partition, and each partition's script sees only its own counter, so
concurrent submissions in different partitions could each pass the cap
together. The cap is then held in the customer's own counter first
(``common/acceptance.py`` hold_quota, ``reserve_quota.lua``, one slot), and given back
when the submission creates nothing (a duplicate, a full queue). After an
error, or a process dying between the two, the request stays held although
the job may not exist; and two identical submissions racing before either
exists both hold a request until one turns out a duplicate, so at the cap a
third may be refused meanwhile: the cap errs low, never past itself. The usage view
still counts the jobs created (the partitions' counters).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..common import keys
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.quotas import Tier, month_of, seconds_until_next_month, usage_view
from ..common.redisconn import Scripts

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient


@dataclass(eq=False)  # compared and hashed as itself
class Quotas:
    settings: Settings
    redis: RedisClient
    scripts: Scripts
    cache_s: float = 2.0  # a customer's tier is read again after this long
    _tiers: dict[str, tuple[Tier, float]] = field(default_factory=dict, init=False)  # customer -> (tier, until)

    async def tier_of(self, customer: str) -> Tier:
        now = time.monotonic()
        hit = self._tiers.get(customer)
        if hit and hit[1] > now:
            return hit[0]
        name = await self.redis.hget(keys.customer(customer), "tier") or self.settings.default_tier  # type: ignore[misc]  # redis-py#2399
        tier = self.settings.tiers.get(name) or self.settings.tiers[self.settings.default_tier]
        if len(self._tiers) > 10_000:
            self._tiers.clear()
        self._tiers[customer] = (tier, now + self.cache_s)
        return tier

    async def _counts(self, customer: str, month: str) -> list[int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.settings.partitions):
                pipe.get(keys.usage(p, customer, month))
            return [int(v or 0) for v in await pipe.execute()]

    async def exceeded(self, customer: str) -> ApiError:
        tier = await self.tier_of(customer)
        retry_after = seconds_until_next_month()
        return ApiError(
            "quota_exceeded",
            f"the {tier.name} tier's cap of {tier.cap} requests this month is reached; "
            f"upgrade the tier or wait for the month to reset (in {retry_after} s)",
            headers={"Retry-After": str(retry_after)},
        )

    async def usage(self, customer: str) -> dict[str, object]:
        month = month_of()
        return usage_view(customer, month, await self.tier_of(customer), sum(await self._counts(customer, month)))

"""Quota checks on submit and the usage view (see common/quotas.py)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from ..common import keys
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.quotas import Tier, month_of, seconds_until_next_month, usage_view


class Quotas:
    def __init__(self, settings: Settings, redis: aioredis.Redis, cache_s: float = 2.0) -> None:
        self.settings = settings
        self.redis = redis
        self.cache_s = cache_s
        self._tiers: dict[str, tuple[Tier, float]] = {}

    async def tier_of(self, customer: str) -> Tier:
        now = time.monotonic()
        hit = self._tiers.get(customer)
        if hit and hit[1] > now:
            return hit[0]
        name = await self.redis.hget(keys.customer(customer), "tier") or self.settings.default_tier
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

    async def left_for(self, customer: str, partition: int, month: str) -> int:
        """The cap left for ``partition`` (-1 for no cap), given the other partitions' counts."""
        tier = await self.tier_of(customer)
        if tier.cap is None:
            return -1
        if self.settings.partitions == 1:
            return tier.cap
        counts = await self._counts(customer, month)
        return max(0, tier.cap - (sum(counts) - counts[partition]))

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

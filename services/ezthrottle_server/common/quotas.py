"""Monthly request quotas by tier (the hosted product's tiers, configurable).

A submission that creates a job counts once against its customer's month;
a duplicate counts nothing. Over the tier's hard cap the API answers 429
``quota_exceeded`` with ``Retry-After`` until the month resets (UTC).

Counters live per partition (``keys.usage``) so the count and the job are
written by one script; with several partitions the cap left for this
partition is the cap minus what the others have counted. With several
partitions, a submission first holds one request of the cap in the
customer's own counter (:func:`hold`, ``reserve_quota.lua``; one slot, so
concurrent submissions in different partitions never overshoot it together).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .scripting import ScriptRun


@dataclass(frozen=True)
class Tier:
    name: str
    included: int  # requests a month in the base price
    cap: int | None  # hard cap; None = no cap


DEFAULT_TIERS: Mapping[str, Tier] = {
    "free": Tier("free", 1_000_000, 1_000_000),
    "indie": Tier("indie", 2_000_000, 5_000_000),
    "growth": Tier("growth", 5_000_000, 10_000_000),
    "pro": Tier("pro", 10_000_000, 25_000_000),
    "enterprise": Tier("enterprise", 25_000_000, None),
}
DEFAULT_TIER = "free"
USAGE_TTL_S = 62 * 24 * 3600  # a month's counter outlives the month
_UNCAPPED = 2**62  # hold() without a cap: counted, never refused


def month_of(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.year:04d}{now.month:02d}"


_month_span = (0, -1, "")  # [start ms, end ms) of the month last asked for by month_at_ms, and its name


def month_at_ms(ms: int) -> str:
    """:func:`month_of` the instant ``ms`` (Unix ms, UTC); each submission asks, so the month's span is kept."""
    global _month_span
    start, end, name = _month_span
    if start <= ms < end:
        return name
    now = datetime.fromtimestamp(ms / 1000, UTC)
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    _month_span = (int(first.timestamp() * 1000), int(following.timestamp() * 1000), month_of(now))
    return _month_span[2]


def seconds_until_next_month(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    end = datetime(now.year, now.month, days, tzinfo=UTC).timestamp() + 86400
    return max(1, int(end - now.timestamp()) + 1)


def tiers_from_config(raw: Any) -> dict[str, Tier]:
    """Tiers from a regions.yaml ``tiers:`` mapping: ``name: {included: N, cap: N|null}``."""
    if raw is None:
        return dict(DEFAULT_TIERS)
    if not isinstance(raw, dict):
        raise ValueError("tiers must be a mapping of tier name to {included, cap}")
    out: dict[str, Tier] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("included"), int):
            raise ValueError(f"tier {name!r} needs an integer 'included' (and 'cap': integer or null)")
        cap = spec.get("cap")
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            raise ValueError(f"tier {name!r}: cap must be a non-negative integer or null")
        out[str(name)] = Tier(str(name), spec["included"], cap)
    return out


def usage_view(customer: str, month: str, tier: Tier, count: int) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "month": f"{month[:4]}-{month[4:]}",
        "tier": tier.name,
        "count": count,
        "included": tier.included,
        "cap": tier.cap,
        "overage": max(0, count - tier.included),
        "remaining": None if tier.cap is None else max(0, tier.cap - count),
    }


async def hold(run: ScriptRun, counter: str, *, cap: int | None) -> bool:
    """``reserve_quota.lua``: hold one request in the customer's counter of the month (``keys.quota_reservations``).

    False when ``cap`` is reached (nothing held); ``cap`` None counts it without a cap (a workflow child).
    """
    return int(await run(keys=[counter], args=[_UNCAPPED if cap is None else cap, USAGE_TTL_S, 1])) == 1


async def give_back(run: ScriptRun, counter: str) -> None:
    """``reserve_quota.lua``: give back one request :func:`hold` held (the submission created nothing)."""
    await run(keys=[counter], args=[0, USAGE_TTL_S, -1])

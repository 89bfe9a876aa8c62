"""Which regions a job runs in, given what it asks for and region health.

- A job goes to the regions it requests, else to the receiving edge's region.
- ``region_policy: "fallback"`` (default) replaces requested regions that are
  down with healthy ones, in the configured preference order (regions.yaml
  order).
- ``"strict"`` keeps to the requested set: down regions are dropped, and if
  none is left the submission is refused with 503 ``region_unavailable``
  naming them.

Region states come from the coordinator (``RegionStates``); a region it has
not published, or states older than ``stale_after_ms`` (no active
coordinator), count as usable: better to try than to refuse work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from . import keys
from .errors import ApiError

if TYPE_CHECKING:
    from .redisconn import RedisClient

DOWN = "down"


def region_usable(region: str, here: str, states: Mapping[str, str]) -> bool:
    """May a job received in ``here`` run in ``region``? (An edge's own region also
    decides its ``/readyz``, and `make up-local` waits for every region.)"""
    # While a coordinator judges regions, one that no node ever reported
    # from has nobody to run the job; without one, only "down" is known.
    if region == here:
        return states.get(region) != DOWN
    if any(s in ("up", "degraded", DOWN) for s in states.values()):
        return states.get(region) in ("up", "degraded")
    return states.get(region) != DOWN


def choose_regions(
    requested: Sequence[str] | None,
    policy: str,
    here: str,
    states: Mapping[str, str],
    preference: Sequence[str],
) -> list[str]:
    wanted = list(requested or [here])

    def usable(region: str) -> bool:
        return region_usable(region, here, states)

    chosen = [r for r in wanted if usable(r)]
    if policy == "strict":
        if not chosen:
            raise ApiError(
                "region_unavailable",
                f"region_policy is strict and every requested region is down: {', '.join(wanted)}",
                field="regions",
            )
        return chosen
    spare = [r for r in preference if usable(r) and r not in wanted]
    for region in wanted:
        if not usable(region) and spare:
            chosen.append(spare.pop(0))
    if not chosen:
        raise ApiError("region_unavailable", f"no region is up (asked for {', '.join(wanted)})", field="regions")
    return chosen


class RegionStates:
    """The coordinator's published region states, cached briefly per node.

    When the cache is out of date, one read refreshes it for every caller
    waiting meanwhile (a busy edge has tens of submissions asking at once).
    """

    def __init__(self, redis: RedisClient, region_ids: Sequence[str], cache_s: float = 0.25, stale_after_ms: int = 5000) -> None:
        self.redis = redis
        self.region_ids = list(region_ids)
        self.cache_s = cache_s
        self.stale_after_ms = stale_after_ms
        self._cached: dict[str, dict[str, Any]] = {}
        self._beats: dict[str, Any] = {}
        self._at = 0.0
        self._states: dict[str, str] | None = None
        self._states_at = 0.0
        self._refreshing: asyncio.Future[None] | None = None

    async def views(self) -> dict[str, dict[str, Any]]:
        if time.monotonic() - self._at > self.cache_s:
            if self._refreshing is None:
                self._refreshing = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._refreshing)  # a caller cancelled leaves the read to the others
        now_ms = int(time.time() * 1000)
        out: dict[str, dict[str, Any]] = {}
        for rid in self.region_ids:
            v = self._cached.get(rid)
            if v is None:
                out[rid] = {
                    "state": "unknown",
                    "reason": "no health published yet (is a coordinator running?)",
                    "edges": self._live_edges(rid, now_ms),
                }
            elif now_ms - int(v.get("updated_ms", 0)) > self.stale_after_ms:
                reason = f"health is stale (last {v['state']}: {v['reason']}); no active coordinator"
                out[rid] = {**v, "state": "unknown", "reason": reason, "edges": self._live_edges(rid, now_ms)}
            else:
                out[rid] = v
        return out

    async def _refresh(self) -> None:
        now = time.monotonic()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.region_states())
                pipe.hgetall(keys.heartbeats())
                raw, self._beats = await pipe.execute()
            self._cached = {rid: orjson.loads(raw[rid]) for rid in self.region_ids if rid in raw}
            self._at = now
        finally:
            self._refreshing = None

    def _live_edges(self, region: str, now_ms: int) -> list[str]:
        """Edges of a region straight from their heartbeats, when no coordinator judges them."""
        urls = set()
        for blob in self._beats.values():
            beat = orjson.loads(blob)
            if beat.get("region") == region and beat.get("url") and now_ms - int(beat.get("ts_ms", 0)) <= self.stale_after_ms:
                urls.add(beat["url"])
        return sorted(urls)

    async def states(self) -> dict[str, str]:
        """Each region's state (every submission asks): worked out once per read of the published states, so never
        older than what :meth:`views` (``GET /api/v1/regions``) last showed."""
        if self._states is None or self._states_at != self._at or time.monotonic() - self._at > self.cache_s:
            views = await self.views()  # reads again when out of date
            self._states = {rid: v["state"] for rid, v in views.items()}
            self._states_at = self._at  # the read they come from
        return self._states

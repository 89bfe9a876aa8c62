"""Region health: up, degraded or down, from edge heartbeats and outcomes.

Every edge writes a heartbeat (node, region, in-flight count, and its recent
outbound outcomes) into one Redis hash once a second. The active coordinator
reads them every ``interval_s`` and publishes each region's state, with the
reason, in another hash that every edge reads (``GET /api/v1/regions``, and
routing at submit).

A region is **down** when
- none of its nodes has beaten for ``silent_after_ms`` (so it is marked down
  within ``silent_after_ms + interval_s`` of its last node going quiet), or
- its attempts fail for infrastructure reasons (connect errors, timeouts)
  across at least ``infra_min_domains`` distinct target domains, at a ratio of
  at least ``infra_down_ratio``: one bad target is the target's problem, not
  the region's.

It is **degraded** on a lower failure ratio or when some of its nodes are
silent. A region comes back only after ``recover_after_ms`` of continuous
health (hysteresis), never on one good beat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from ..common import keys
from ..common.config import Settings
from ..common.metrics import REGION_STATE
from ..common.redisconn import UNAVAILABLE
from .lease import Lease

log = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
UNKNOWN = "unknown"  # no node of the region has ever reported: routable, not judged
_STATE_VALUE = {UP: 2, DEGRADED: 1, DOWN: 0, UNKNOWN: 2}


@dataclass(frozen=True)
class HealthRules:
    silent_after_ms: int = 2500
    forget_node_after_ms: int = 3_600_000
    infra_min_domains: int = 3
    infra_min_attempts: int = 5
    infra_down_ratio: float = 0.5
    infra_degraded_ratio: float = 0.2
    recover_after_ms: int = 5000


@dataclass
class RegionHealth:
    state: str = UP
    reason: str = "no data yet"
    since_ms: int = 0
    healthy_since_ms: int | None = None
    nodes: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)  # URLs of live edge nodes
    seen: bool = True  # False until a node of the region has ever reported

    def view(self, now_ms: int) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since_ms": self.since_ms,
            "nodes": self.nodes,
            "edges": self.edges,
            "seen": self.seen,
            "updated_ms": now_ms,
        }


def assess(beats: list[dict[str, Any]], now_ms: int, rules: HealthRules) -> tuple[str, str, list[str]]:
    """The instantaneous state of one region from its nodes' heartbeats."""
    alive = [b for b in beats if now_ms - int(b.get("ts_ms", 0)) <= rules.silent_after_ms]
    names = sorted(b["node"] for b in alive)
    if not alive:
        if beats:
            last = max(int(b.get("ts_ms", 0)) for b in beats)
            return DOWN, f"no heartbeat for {now_ms - last} ms", names
        return DOWN, "no live node (every node stopped)", names
    attempts = sum(int(b.get("outcomes", {}).get("attempts", 0)) for b in alive)
    failures = sum(int(b.get("outcomes", {}).get("infra_failures", 0)) for b in alive)
    domains: set[str] = set()
    for b in alive:
        domains.update(b.get("outcomes", {}).get("infra_failure_domains", []))
    if attempts >= rules.infra_min_attempts and attempts:
        ratio = failures / attempts
        if ratio >= rules.infra_down_ratio and len(domains) >= rules.infra_min_domains:
            return DOWN, f"{failures}/{attempts} recent attempts failed to connect or timed out across {len(domains)} domains", names
        if ratio >= rules.infra_degraded_ratio and len(domains) >= rules.infra_min_domains:
            return DEGRADED, f"{failures}/{attempts} recent attempts failed for infrastructure reasons", names
    silent = len(beats) - len(alive)
    if silent:
        return DEGRADED, f"{silent} of {len(beats)} nodes silent", names
    return UP, f"{len(alive)} node(s) healthy", names


def step(current: RegionHealth, observed: str, reason: str, nodes: list[str], now_ms: int, rules: HealthRules) -> RegionHealth:
    """Apply hysteresis: worse states apply at once, better ones after sustained health.

    A region's first nodes ever are believed at once: there is no flapping to damp.
    """
    current.nodes = nodes
    if not current.seen:
        if nodes:
            current.seen = True
            current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
        return current
    if _STATE_VALUE[observed] < _STATE_VALUE[current.state]:
        current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
        return current
    if _STATE_VALUE[observed] == _STATE_VALUE[current.state]:
        current.reason = reason
        current.healthy_since_ms = None
        return current
    # Better than now: wait for it to last.
    if current.healthy_since_ms is None:
        current.healthy_since_ms = now_ms
    if now_ms - current.healthy_since_ms >= rules.recover_after_ms:
        current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
    else:
        left = rules.recover_after_ms - (now_ms - current.healthy_since_ms)
        current.reason = f"recovering ({reason}); {left} ms of sustained health to go"
    return current


class RegionMonitor:
    def __init__(self, settings: Settings, redis: aioredis.Redis, lease: Lease, rules: HealthRules | None = None, interval_s: float = 0.25) -> None:
        self.settings = settings
        self.redis = redis
        self.lease = lease
        self.rules = rules or HealthRules()
        self.interval_s = interval_s
        self.regions: dict[str, RegionHealth] = {}

    async def _load_published(self) -> None:
        """A new leader continues from the published states (keeps hysteresis across failover)."""
        published = await self.redis.hgetall(keys.region_states())
        for rid in self.settings.region_ids:
            if rid in published:
                v = orjson.loads(published[rid])
                self.regions[rid] = RegionHealth(v["state"], v["reason"], int(v["since_ms"]), None, v.get("nodes", []), seen=v.get("seen", True))
            else:
                self.regions[rid] = RegionHealth(state=UNKNOWN, reason="no node has ever reported", since_ms=0, seen=False)

    async def evaluate(self) -> dict[str, RegionHealth]:
        now_ms = int(time.time() * 1000)
        raw = await self.redis.hgetall(keys.heartbeats())
        by_region: dict[str, list[dict[str, Any]]] = {rid: [] for rid in self.settings.region_ids}
        stale: list[str] = []
        for node, blob in raw.items():
            beat = orjson.loads(blob)
            if now_ms - int(beat.get("ts_ms", 0)) > self.rules.forget_node_after_ms:
                stale.append(node)
            elif beat.get("region") in by_region:
                by_region[beat["region"]].append(beat)
        if stale:
            await self.redis.hdel(keys.heartbeats(), *stale)
        published: dict[str, bytes] = {}
        for rid, beats in by_region.items():
            observed, reason, nodes = assess(beats, now_ms, self.rules)
            before = self.regions[rid].state
            health = step(self.regions[rid], observed, reason, nodes, now_ms, self.rules)
            health.edges = sorted({b["url"] for b in beats if b.get("url") and b["node"] in nodes})
            if health.state != before:
                log.warning("region %s is %s: %s", rid, health.state, health.reason, extra={"region": rid})
            if health.state != UNKNOWN:
                REGION_STATE.labels(rid).set(_STATE_VALUE[health.state])
            published[rid] = orjson.dumps(health.view(now_ms))
        await self.redis.hset(keys.region_states(), mapping=published)
        return self.regions

    async def run(self) -> None:
        loaded = False
        while True:
            try:
                if self.lease.is_leader:
                    if not loaded:
                        await self._load_published()
                        loaded = True
                    await self.evaluate()
                else:
                    loaded = False
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE:  # also a cluster failing over
                log.warning("redis unavailable; region health paused", exc_info=True)
            await asyncio.sleep(self.interval_s)

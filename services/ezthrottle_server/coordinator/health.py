"""Region health: up, degraded or down, from signals no tenant controls.

Every edge writes a heartbeat into one Redis hash once a second (and at once
when a probe result changes): node, region, advertised URL, in-flight count,
its synthetic probes of operator health targets (edge/probes.py: regions.yaml
``health_targets``, by default the other regions' edges' ``/healthz``) and
its recent outcomes per customer domain. The active coordinator reads them
every ``interval_s`` and publishes each region's state, with the reason, in
another hash that every edge reads (``GET /api/v1/regions``, routing at
submit, an edge's own ``/readyz``).

A region is **down** when
- none of its nodes has beaten for ``silent_after_ms`` (so it is marked down
  within ``silent_after_ms + interval_s`` of its last node going quiet), or
- more than half of its health targets fail from it (``probe_fail_after``
  probes in a row from every live node), each failure *corroborated*: the
  target answered another region since this region's failures began; or,
  for another region's edge that no third region probes, that edge beat since
  then (it lives: the path to it is what fails); or it is an operator's
  target that no other region probes. A target failing from every region
  that probes it is the target's problem, and an edge gone silent is not a
  path failure, so neither counts.

It is **degraded** when some of its nodes are silent, when some (not more
than half) of its health targets fail, when one node fails a target another
node reaches, or when customers' domains diverge: at least
``infra_min_domains`` domains fail to connect from here (at least
``infra_min_attempts`` attempts, ``infra_down_ratio`` of them connection
errors or timeouts) while another region reaches them. Customers' targets
never take a region down: a customer owns their target and could answer one
region and refuse another, and a flood of dead targets fails from every
region it is rerouted to. Degraded regions still take jobs.

Silence the regions did not cause is not judged. Every node beats through
the same Redis, so when that Redis (or this monitor's view of it) fails,
every node falls silent at once; judging that would take every region down,
evacuate their queues toward nowhere, and hold every region back for
``recover_after_ms`` after Redis is back. So:

- after a gap in the monitor's own reads (a failed read, or none for longer
  than ``silent_after_ms``), a node that was alive when it last read is
  silent only from the first read after the gap;
- when every node of every region is silent at once, the monitor keeps the
  states it published (saying so) for up to ``all_silent_grace_ms``, then
  judges as usual: a real outage of everything is still reported.

Hysteresis: worse states apply at once. A region seen failing (silent,
probes, divergence) comes back only after ``recover_after_ms`` of continuous
health, never on one good beat; a region never judged, or down only because
its nodes all stopped cleanly (they leave the heartbeat table), is believed
at once, so a fresh or restarted cluster is usable as soon as its edges beat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from ..common import keys
from ..common.config import Settings
from ..common.metrics import REGION_STATE
from ..common.redisconn import UNAVAILABLE
from .lease import Lease

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
UNKNOWN = "unknown"  # no node of the region has ever reported: routable, not judged
_STATE_VALUE = {UP: 2, DEGRADED: 1, DOWN: 0, UNKNOWN: 2}


@dataclass(frozen=True)
class HealthRules:
    silent_after_ms: int = 2500
    forget_node_after_ms: int = 3_600_000
    probe_fail_after: int = 2
    infra_min_domains: int = 3
    infra_min_attempts: int = 5
    infra_down_ratio: float = 0.5
    recover_after_ms: int = 5000
    all_silent_grace_ms: int = 10_000  # every node silent at once: states held this long before it is judged


class Observation(NamedTuple):
    """The instantaneous state of one region, and whether it is a failure
    (a region whose nodes all stopped cleanly is down, not failing)."""

    state: str
    reason: str
    nodes: list[str]
    failing: bool = False


@dataclass
class RegionHealth:
    state: str = UP
    reason: str = "no data yet"
    since_ms: int = 0
    healthy_since_ms: int | None = None
    nodes: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)  # URLs of live edge nodes
    seen: bool = True  # False until a node of the region has ever reported
    failing: bool = False  # seen failing since it was last up: coming back takes sustained health

    def view(self, now_ms: int) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since_ms": self.since_ms,
            "nodes": self.nodes,
            "edges": self.edges,
            "seen": self.seen,
            "seen_failing": self.failing,
            "updated_ms": now_ms,
        }


@dataclass
class _Target:
    """One health target as a region sees it, over its live nodes."""

    peer: str | None
    reporters: int = 0
    failing_nodes: int = 0
    reaching_nodes: int = 0
    since_ms: int = 0  # the latest start of a failing node's streak
    ok_ms: int = 0  # the last success from any node
    error: str = ""

    @property
    def failing(self) -> bool:
        return self.reporters > 0 and self.failing_nodes == self.reporters


def _alive(beats: list[dict[str, Any]], now_ms: int, rules: HealthRules) -> list[dict[str, Any]]:
    return [b for b in beats if now_ms - int(b.get("ts_ms", 0)) <= rules.silent_after_ms]


def _targets(alive: list[dict[str, Any]], now_ms: int, rules: HealthRules) -> dict[str, _Target]:
    out: dict[str, _Target] = {}
    for beat in alive:
        for url, p in (beat.get("probes") or {}).items():
            if p.get("blocked") or now_ms - int(p.get("checked_ms", 0)) > rules.silent_after_ms:
                continue
            t = out.setdefault(url, _Target(p.get("peer")))
            t.reporters += 1
            t.ok_ms = max(t.ok_ms, int(p.get("ok_ms", 0)))
            if p.get("ok"):
                t.reaching_nodes += 1
            elif int(p.get("failures", 0)) >= rules.probe_fail_after:
                t.failing_nodes += 1
                t.since_ms = max(t.since_ms, int(p.get("failing_since_ms", 0)))
                t.error = str(p.get("error") or "no answer")
    return out


def _domains(alive: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for beat in alive:
        for domain, (attempts, failures) in ((beat.get("outcomes") or {}).get("domains") or {}).items():
            agg = out.setdefault(domain, [0, 0])
            agg[0] += int(attempts)
            agg[1] += int(failures)
    return out


def _probe_verdict(
    mine: dict[str, _Target], elsewhere: dict[str, dict[str, _Target]], peer_beats: Mapping[str, int]
) -> tuple[list[tuple[str, _Target]], int]:
    """The failing targets that count against this region, and how many targets are judged."""
    counted: list[tuple[str, _Target]] = []
    excused = 0
    for url, t in mine.items():
        if not t.failing:
            continue
        seen = [views[url] for views in elsewhere.values() if url in views]
        if any(o.ok_ms >= t.since_ms for o in seen):
            counted.append((url, t))  # it answered another region meanwhile
        elif seen:
            excused += 1  # it fails from the other regions too: the target's problem
        elif t.peer is not None:
            if peer_beats.get(url, 0) > t.since_ms:
                counted.append((url, t))  # that edge lives and beats: the path to it fails
            else:
                excused += 1  # that edge is gone, not this region's path
        else:
            counted.append((url, t))  # an operator's target only this region probes
    return counted, len(mine) - excused


def assess(
    beats: list[dict[str, Any]],
    now_ms: int,
    rules: HealthRules,
    others: Mapping[str, list[dict[str, Any]]] | None = None,
) -> Observation:
    """The instantaneous state of one region from its nodes' heartbeats, compared with ``others``' (region -> beats)."""
    others = others or {}
    alive = _alive(beats, now_ms, rules)
    names = sorted(b["node"] for b in alive)
    if not alive:
        if beats:
            last = max(int(b.get("ts_ms", 0)) for b in beats)
            return Observation(DOWN, f"no heartbeat for {now_ms - last} ms", names, True)
        return Observation(DOWN, "no live node (every node stopped)", names, False)

    others_alive = {rid: _alive(b, now_ms, rules) for rid, b in others.items()}
    mine = _targets(alive, now_ms, rules)
    elsewhere = {rid: _targets(a, now_ms, rules) for rid, a in others_alive.items()}
    peer_beats = {f"{b['url'].rstrip('/')}/healthz": int(b.get("ts_ms", 0)) for a in others_alive.values() for b in a if b.get("url")}
    counted, judged = _probe_verdict(mine, elsewhere, peer_beats)
    if counted and len(counted) * 2 > judged:
        url, t = counted[0]
        return Observation(
            DOWN, f"{len(counted)} of {judged} health targets unreachable from here while up elsewhere ({url}: {t.error})", names, True
        )
    silent = len(beats) - len(alive)
    if silent:
        return Observation(DEGRADED, f"{silent} of {len(beats)} nodes silent", names, True)
    if counted:
        url, t = counted[0]
        return Observation(DEGRADED, f"{len(counted)} of {judged} health targets unreachable from here ({url}: {t.error})", names, True)
    partial = [url for url, t in mine.items() if t.failing_nodes and t.reaching_nodes]
    if partial:
        return Observation(
            DEGRADED, f"some nodes cannot reach health targets other nodes reach ({', '.join(sorted(partial)[:3])})", names, True
        )

    domains = _domains(alive)
    reached = {d for a in others_alive.values() for d, (n, f) in _domains(a).items() if n and (n - f) * 2 > n}
    diverging = sorted(
        d for d, (n, f) in domains.items() if n >= rules.infra_min_attempts and f >= rules.infra_down_ratio * n and d in reached
    )
    if len(diverging) >= rules.infra_min_domains:
        return Observation(
            DEGRADED,
            f"{len(diverging)} domains fail to connect from here while other regions reach them ({', '.join(diverging[:3])})",
            names,
            True,
        )
    return Observation(UP, f"{len(alive)} node(s) healthy", names)


def step(
    current: RegionHealth, observed: str, reason: str, nodes: list[str], now_ms: int, rules: HealthRules, failing: bool = True
) -> RegionHealth:
    """Apply hysteresis: worse states apply at once; better ones after sustained health
    if the region was seen failing (``failing``: the observation, if not up, is a failure).

    A region's first nodes ever are believed at once: there is no flapping to damp.
    """
    current.nodes = nodes
    bad = failing and observed in (DOWN, DEGRADED)
    if not current.seen:
        if nodes:
            current.seen = True
            current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
            current.failing = bad
        return current
    if _STATE_VALUE[observed] < _STATE_VALUE[current.state]:
        current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
        current.failing = current.failing or bad
        return current
    if _STATE_VALUE[observed] == _STATE_VALUE[current.state]:
        current.reason = reason
        current.healthy_since_ms = None
        current.failing = current.failing or bad
        return current
    # Better than now: at once if it never failed, else wait for it to last.
    if current.failing:
        if current.healthy_since_ms is None:
            current.healthy_since_ms = now_ms
        if now_ms - current.healthy_since_ms < rules.recover_after_ms:
            left = rules.recover_after_ms - (now_ms - current.healthy_since_ms)
            current.reason = f"recovering ({reason}); {left} ms of sustained health to go"
            return current
    current.state, current.reason, current.since_ms, current.healthy_since_ms = observed, reason, now_ms, None
    current.failing = bad
    return current


class RegionMonitor:
    def __init__(
        self, settings: Settings, redis: RedisClient, lease: Lease, rules: HealthRules | None = None, interval_s: float = 0.25
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.lease = lease
        self.rules = rules or HealthRules()
        self.interval_s = interval_s
        self.regions: dict[str, RegionHealth] = {}
        self.store_lost = False  # a read failed since the last good one (run() sets it)
        self._last_read_ms: int | None = None  # the last good read of the heartbeats
        self._resumed_ms = 0  # the first good read after a gap in them
        self._alive_at_ms = 0  # the last good read before that gap
        self._all_silent_since_ms: int | None = None

    async def _load_published(self) -> None:
        """A new leader continues from the published states (keeps hysteresis across failover)."""
        published = await self.redis.hgetall(keys.region_states())  # type: ignore[misc]  # redis-py#2399
        for rid in self.settings.region_ids:
            if rid in published:
                v = orjson.loads(published[rid])
                self.regions[rid] = RegionHealth(
                    v["state"],
                    v["reason"],
                    int(v["since_ms"]),
                    None,
                    v.get("nodes", []),
                    seen=v.get("seen", True),
                    failing=v.get("seen_failing", False),
                )
            else:
                self.regions[rid] = RegionHealth(state=UNKNOWN, reason="no node has ever reported", since_ms=0, seen=False)
        # the last leader's last view: a gap since then is this monitor's, not the regions'
        self._last_read_ms = max((int(orjson.loads(v).get("updated_ms", 0)) for v in published.values()), default=None)

    def _excuse_gap(self, by_region: dict[str, list[dict[str, Any]]], now_ms: int) -> None:
        """After a gap in this monitor's reads, a node alive at the last read before it is silent only from the
        first read after it: beats it could not write (or this monitor could not read) are not its silence."""
        last, silent = self._last_read_ms, self.rules.silent_after_ms
        if last is not None and (self.store_lost or now_ms - last > silent):
            self._resumed_ms, self._alive_at_ms = now_ms, last
        self.store_lost, self._last_read_ms = False, now_ms
        if not self._resumed_ms or now_ms - self._resumed_ms > silent:
            return
        for beats in by_region.values():
            for i, b in enumerate(beats):
                ts = int(b.get("ts_ms", 0))
                if self._alive_at_ms - ts <= silent and ts < self._resumed_ms:
                    beats[i] = {**b, "ts_ms": self._resumed_ms}

    def _hold_all_silent(self, by_region: dict[str, list[dict[str, Any]]], now_ms: int) -> bool:
        """Every node of every region silent at once: True (keep the states) for up to ``all_silent_grace_ms``."""
        if not any(by_region.values()) or any(_alive(b, now_ms, self.rules) for b in by_region.values()):
            self._all_silent_since_ms = None
            return False
        if self._all_silent_since_ms is None:
            self._all_silent_since_ms = now_ms
            log.warning("every node of every region is silent at once: region states held; is Redis reachable from the edges?")
        return now_ms - self._all_silent_since_ms < self.rules.all_silent_grace_ms

    async def evaluate(self) -> dict[str, RegionHealth]:
        now_ms = int(time.time() * 1000)
        raw = await self.redis.hgetall(keys.heartbeats())  # type: ignore[misc]  # redis-py#2399
        by_region: dict[str, list[dict[str, Any]]] = {rid: [] for rid in self.settings.region_ids}
        stale: list[str] = []
        for node, blob in raw.items():
            beat = orjson.loads(blob)
            if now_ms - int(beat.get("ts_ms", 0)) > self.rules.forget_node_after_ms:
                stale.append(node)
            elif beat.get("region") in by_region:
                by_region[beat["region"]].append(beat)
        if stale:
            await self.redis.hdel(keys.heartbeats(), *stale)  # type: ignore[misc]  # redis-py#2399
        self._excuse_gap(by_region, now_ms)
        published: dict[str, bytes] = {}
        if self._hold_all_silent(by_region, now_ms):
            held_s = (now_ms - (self._all_silent_since_ms or now_ms)) / 1000
            for rid, health in self.regions.items():
                view = health.view(now_ms)
                view["reason"] = f"{health.reason} (held: every node of every region silent for {held_s:.1f} s)"
                published[rid] = orjson.dumps(view)
            await self.redis.hset(keys.region_states(), mapping=published)  # type: ignore[misc]  # redis-py#2399
            return self.regions
        for rid, beats in by_region.items():
            others = {other: b for other, b in by_region.items() if other != rid}
            observed, reason, nodes, failing = assess(beats, now_ms, self.rules, others)
            before = self.regions[rid].state
            health = step(self.regions[rid], observed, reason, nodes, now_ms, self.rules, failing)
            health.edges = sorted({b["url"] for b in beats if b.get("url") and b["node"] in nodes})
            if health.state != before:
                log.warning("region %s is %s: %s", rid, health.state, health.reason, extra={"region": rid})
            if health.state != UNKNOWN:
                REGION_STATE.labels(rid).set(_STATE_VALUE[health.state])
            published[rid] = orjson.dumps(health.view(now_ms))
        await self.redis.hset(keys.region_states(), mapping=published)  # type: ignore[misc]  # redis-py#2399
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
                self.store_lost = True
                log.warning("redis unavailable; region health paused", exc_info=True)
            await asyncio.sleep(self.interval_s)

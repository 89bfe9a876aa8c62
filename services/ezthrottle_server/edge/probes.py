"""Synthetic probes of an edge's outbound path, for region health.

Every ``region_probe_interval_s`` an edge GETs each of its health targets
through its executor: the connector, outbound policy and network path that
customers' sends take. Per target it keeps the last result, when it last got
an answer and since when it has been failing; the heartbeat carries them
(``probes``) and the coordinator judges the region from them, comparing
regions (coordinator/health.py). No tenant chooses these targets.

Targets, in order: the region's ``health_targets`` in regions.yaml, the
global ``health_targets`` (``EZT_HEALTH_TARGETS``), else the ``/healthz`` of
every live edge of the other regions, at the URL each advertises in its
heartbeat. Any HTTP answer is a success (the path works; a sick target is
the target's business); a connection error or no answer within
``region_probe_timeout_s`` is a failure. A target the outbound policy
refuses is reported ``blocked`` and counts for nothing: allow it
(``outbound.allow_cidrs`` / ``allow_hosts``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..common.config import Settings
from .executor import BLOCKED, CONNECTION, TIMEOUT, AttemptResult, Executor

log = logging.getLogger(__name__)

PeerEdges = Callable[[], Awaitable[dict[str, list[str]]]]  # region -> its live edges' URLs


@dataclass
class ProbeState:
    peer: str | None  # the region whose edge this is; None for an operator's target
    ok: bool | None = None  # None until the first answer (or failure)
    checked_ms: int = 0
    ok_ms: int = 0  # last success
    failing_since_ms: int = 0  # first failure of the current streak; 0 while it answers
    failures: int = 0  # in a row
    blocked: bool = False
    error: str | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": bool(self.ok),
            "checked_ms": self.checked_ms,
            "ok_ms": self.ok_ms,
            "failing_since_ms": self.failing_since_ms,
            "failures": self.failures,
        }
        if self.peer:
            out["peer"] = self.peer
        if self.blocked:
            out["blocked"] = True
        if self.error:
            out["error"] = self.error[:200]
        return out


class Prober:
    def __init__(self, settings: Settings, executor: Executor, peer_edges: PeerEdges) -> None:
        assert settings.region is not None
        self.region = settings.region
        self.executor = executor
        self.peer_edges = peer_edges
        self.configured = settings.probe_targets(settings.region)
        self.interval_s = settings.region_probe_interval_s
        self.timeout_s = settings.region_probe_timeout_s
        self.changed = asyncio.Event()  # a result changed: the heartbeat goes out now
        self._states: dict[str, ProbeState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def targets(self) -> dict[str, str | None]:
        """URL -> the peer region it belongs to (None: an operator's target)."""
        if self.configured:
            return dict.fromkeys(self.configured)
        edges = await self.peer_edges()
        return {f"{url.rstrip('/')}/healthz": rid for rid, urls in edges.items() if rid != self.region for url in urls}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """What the heartbeat carries: each current target's last result."""
        return {url: st.view() for url, st in self._states.items() if st.ok is not None}

    async def probe(self, url: str) -> None:
        """Probe ``url``; a first failure is checked again at once (a timeout) or soon
        (``interval_s / 2``), not at the next tick, so two in a row come within about
        two timeouts of the path breaking."""
        while True:
            result = await self.executor.send("GET", url, {"User-Agent": "ezthrottle-health-probe"}, None, timeout_s=self.timeout_s)
            st = self._states.get(url)
            if st is None:  # no longer a target
                return
            self._record(url, st, result)
            if st.ok or st.blocked or st.failures != 1:
                return
            if result.error_kind != TIMEOUT:
                await asyncio.sleep(self.interval_s / 2)

    def _record(self, url: str, st: ProbeState, result: AttemptResult) -> None:
        now_ms = int(time.time() * 1000)
        was = st.ok
        st.checked_ms = now_ms
        blocked = result.error_kind == BLOCKED
        if blocked and not st.blocked:
            log.warning("health target %s is refused by the outbound policy (%s): allow it, or it says nothing", url, result.error)
        st.blocked = blocked
        if result.error_kind in (TIMEOUT, CONNECTION) or blocked:
            st.ok, st.error = False, result.error
            st.failing_since_ms = st.failing_since_ms or now_ms
            st.failures += 1
        else:
            st.ok, st.error, st.ok_ms, st.failing_since_ms, st.failures = True, None, now_ms, 0, 0
        if st.ok != was or (not st.ok and st.failures <= 3):
            self.changed.set()

    def _reap(self) -> None:
        for url in [u for u, t in self._tasks.items() if t.done()]:
            task = self._tasks.pop(url)
            if not task.cancelled() and task.exception() is not None:
                log.warning("health probe of %s crashed", url, exc_info=task.exception())

    async def run(self) -> None:
        try:
            while True:
                try:
                    targets = await self.targets()
                except asyncio.CancelledError:
                    raise
                except Exception:  # Redis away: keep probing what we had
                    log.debug("could not list peer edges; probing the last known targets", exc_info=True)
                    targets = {url: st.peer for url, st in self._states.items()}
                for url in [u for u in self._states if u not in targets]:
                    del self._states[url]
                    self.changed.set()
                self._reap()
                for url, peer in targets.items():
                    self._states.setdefault(url, ProbeState(peer))
                    if url not in self._tasks:  # one probe per target at a time
                        self._tasks[url] = asyncio.create_task(self.probe(url), name=f"probe {url}")
                await asyncio.sleep(self.interval_s)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

"""Gauges read from Redis on a timer by the active coordinator: queues, delayed
work, webhook backlog, and each busy target domain's limit.

Counters live where events happen (edges, delivery); these are states that
only Redis knows, so one process reads them: the coordinator holding the
lease (a standby exports none, see :class:`~ezthrottle_server.common.metrics.SampledGauges`).

Redis cost of one pass (every ``metrics_sample_s``), bounded whatever the load:

- per partition and region: XLEN, XPENDING (summary form) and the first
  entry (XRANGE COUNT 1) of the region's job stream;
- per partition: ZCARD and first member of the delayed set; XLEN of the
  deliveries stream and of each send route; ZCARD of the webhook retry set
  and of the dead letters;
- per region: the first ``max_scopes`` members of its pacing ready set (the
  scopes with work, most due first);
- per scope seen: ZCARD of its wait and running sets and the head of its
  wait set, per region;
- per domain among the busiest ``top_domains``: the read-only ``describe``
  pacing script (its limit, the limit's source, any pause).

Domains beyond the busiest ``top_domains`` are summed into ``domain="other"``,
so the domain label stays bounded. Ages of pacing queues count from the
submission of the job at the head of each queue (a job id starts with its
creation time), so a retried or scheduled job counts from its submission.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..common import keys
from ..common.config import Settings
from ..common.metrics import SAMPLED
from ..common.redisconn import Scripts
from ..pacing.limiter import Limiter, PacingPolicy
from ..pacing.scope import SHARED, Scope
from .lease import Leadership
from .loop import CoordinatorLoop

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

OTHER = "other"  # the label of every domain beyond the busiest N (a real domain always has a port)
ROUTES_ANY = "any"

Sample = dict[str, list[tuple[tuple[str, ...], float]]]


def job_created_ms(job_id: str) -> int | None:
    """The creation time written into a job id (``job_<ms>_<hex>p<N>``)."""
    parts = job_id.split("_")
    if len(parts) >= 3 and parts[0] == "job" and parts[1].isdigit():
        return int(parts[1])
    return None


def entry_ms(entry_id: str) -> int | None:
    """The time part of a stream entry id (``<ms>-<seq>``)."""
    head = entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass
class _DomainLoad:
    waiting: int = 0
    running: int = 0
    oldest_ms: int | None = None

    def saw_head(self, created_ms: int | None) -> None:
        if created_ms is not None and (self.oldest_ms is None or created_ms < self.oldest_ms):
            self.oldest_ms = created_ms


class QueueSampler(CoordinatorLoop):
    """Every ``interval_s``, the leader publishes a sample; a standby clears its gauges (it exports none)."""

    what = "queue sampling"

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        lease: Leadership,
        *,
        interval_s: float | None = None,
        top_domains: int = 20,
        max_scopes: int = 500,
    ) -> None:
        self.interval_s = interval_s if interval_s is not None else settings.metrics_sample_s
        super().__init__(settings, redis, Scripts(redis), lease, poll_s=self.interval_s, standby_poll_s=self.interval_s)
        self.top_domains = top_domains
        self.max_scopes = max_scopes
        self.regions: tuple[str, ...] = settings.region_ids
        self.limiter = Limiter(redis, PacingPolicy.from_settings(settings), None, self.regions)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            SAMPLED.clear()

    async def poll(self) -> bool:
        if self.lease.is_leader:
            try:
                SAMPLED.publish(await self.sample())
            except (RedisError, OSError):
                log.warning("redis unavailable; queue gauges not sampled", exc_info=True)
        else:
            SAMPLED.clear()
        return False

    async def sample(self) -> Sample:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        out: Sample = defaultdict(list)
        await self._streams(out, now_ms)
        await self._delayed_and_webhooks(out, now_ms)
        await self._domains(out, now_ms)
        out["ezt_sampler_duration_seconds"].append(((), time.perf_counter() - started))
        out["ezt_sampler_last_success_timestamp_seconds"].append(((), time.time()))
        return dict(out)

    # -- region streams ------------------------------------------------------

    async def _streams(self, out: Sample, now_ms: int) -> None:
        parts = range(self.settings.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in parts:
                for r in self.regions:
                    stream = keys.region_stream(p, r)
                    pipe.xlen(stream)
                    pipe.xpending(stream, keys.edge_group(r))
                    pipe.xrange(stream, count=1)
            replies = await pipe.execute(raise_on_error=False)
        depth: dict[str, int] = defaultdict(int)
        pending: dict[str, int] = defaultdict(int)
        oldest: dict[str, int] = {}
        i = 0
        for _p in parts:
            for r in self.regions:
                length, summary, first = replies[i : i + 3]
                i += 3
                depth[r] += length if isinstance(length, int) else 0
                if isinstance(summary, dict):  # an error (no group yet) counts as nothing pending
                    pending[r] += int(summary.get("pending") or 0)
                if isinstance(first, list) and first:
                    ms = entry_ms(first[0][0])
                    if ms is not None:
                        oldest[r] = min(oldest.get(r, ms), ms)
        for r in self.regions:
            out["ezt_queue_depth"].append(((r, "stream"), depth[r]))
            out["ezt_stream_pending_entries"].append(((r,), pending[r]))
            out["ezt_queue_oldest_age_seconds"].append(((r, "stream"), _age_s(now_ms, oldest.get(r))))

    # -- delayed work and webhooks ---------------------------------------------

    async def _delayed_and_webhooks(self, out: Sample, now_ms: int) -> None:
        routes = (ROUTES_ANY, *self.regions)
        parts = range(self.settings.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in parts:
                pipe.zcard(keys.delayed(p))
                pipe.zrange(keys.delayed(p), 0, 0, withscores=True)
                pipe.xlen(keys.deliveries(p))
                for route in routes:
                    pipe.xlen(keys.delivery_sends(p, route))
                pipe.zcard(keys.delivery_scheduled(p))
                pipe.zcard(keys.delivery_dead(p))
            replies = await pipe.execute()
        delayed = finished = send = scheduled = dead = 0
        first_due: float | None = None
        per_partition = 5 + len(routes)
        for k in range(len(parts)):
            row = replies[k * per_partition : (k + 1) * per_partition]
            delayed += int(row[0])
            if row[1]:
                due = float(row[1][0][1])
                first_due = due if first_due is None else min(first_due, due)
            finished += int(row[2])
            send += sum(int(n) for n in row[3 : 3 + len(routes)])
            scheduled += int(row[3 + len(routes)])
            dead += int(row[4 + len(routes)])
        out["ezt_delayed_jobs"].append(((), delayed))
        out["ezt_delayed_overdue_seconds"].append(((), max(0.0, (now_ms - first_due) / 1000) if first_due is not None else 0.0))
        for stage, n in (("finished", finished), ("send", send), ("scheduled", scheduled)):
            out["ezt_webhook_backlog"].append(((stage,), n))
        out["ezt_webhook_dead_letter_jobs"].append(((), dead))

    # -- pacing queues and target domains --------------------------------------

    async def _domains(self, out: Sample, now_ms: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in self.regions:
                pipe.zrange(keys.pacing_ready(r), 0, self.max_scopes - 1)
            ready = await pipe.execute()
        scopes = sorted({Scope.from_member(m) for members in ready for m in members}, key=lambda s: s.member)
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                for r in self.regions:
                    pipe.zcard(keys.pacing_wait(scope.domain, scope.who, r))
                    pipe.zcard(keys.pacing_running(scope.domain, scope.who, r))
                    pipe.zrange(keys.pacing_wait(scope.domain, scope.who, r), 0, 0)
            replies = await pipe.execute() if scopes else []

        waiting: dict[str, int] = defaultdict(int)
        running: dict[str, int] = defaultdict(int)
        head_ms: dict[str, int] = {}
        domains: dict[str, _DomainLoad] = defaultdict(_DomainLoad)
        i = 0
        for scope in scopes:
            load = domains[scope.domain]
            for r in self.regions:
                n_wait, n_run, head = int(replies[i]), int(replies[i + 1]), replies[i + 2]
                i += 3
                waiting[r] += n_wait
                running[r] += n_run
                load.waiting += n_wait
                load.running += n_run
                if head:
                    created = job_created_ms(head[0])
                    load.saw_head(created)
                    if created is not None:
                        head_ms[r] = min(head_ms.get(r, created), created)
        for r in self.regions:
            out["ezt_queue_depth"].append(((r, "waiting"), waiting[r]))
            out["ezt_queue_depth"].append(((r, "running"), running[r]))
            out["ezt_queue_oldest_age_seconds"].append(((r, "waiting"), _age_s(now_ms, head_ms.get(r))))
        out["ezt_domains_active"].append(((), len(domains)))

        ranked = sorted(domains, key=lambda d: (-(domains[d].waiting + domains[d].running), d))
        top, rest = ranked[: self.top_domains], ranked[self.top_domains :]
        for d in top:
            load = domains[d]
            out["ezt_domain_queue_depth"].append(((d, "waiting"), load.waiting))
            out["ezt_domain_queue_depth"].append(((d, "running"), load.running))
            out["ezt_domain_oldest_wait_seconds"].append(((d,), _age_s(now_ms, load.oldest_ms)))
        if rest:
            out["ezt_domain_queue_depth"].append(((OTHER, "waiting"), sum(domains[d].waiting for d in rest)))
            out["ezt_domain_queue_depth"].append(((OTHER, "running"), sum(domains[d].running for d in rest)))
            oldest = [ms for d in rest if (ms := domains[d].oldest_ms) is not None]
            out["ezt_domain_oldest_wait_seconds"].append(((OTHER,), _age_s(now_ms, min(oldest) if oldest else None)))
        for d in top:
            await self._limit(out, d, now_ms)

    async def _limit(self, out: Sample, domain: str, now_ms: int) -> None:
        """The domain's limit as ``ezthrottle-admin domains show <domain>`` tells it.

        A domain limited per customer shows its shared view: the configured
        per-customer limit, not any one customer's header-tuned one.
        """
        view = await self.limiter.describe(domain, SHARED)
        out["ezt_domain_rps_limit"].append(((domain, view.rps_source), view.rps))
        out["ezt_domain_max_concurrent"].append(((domain, view.max_concurrent_source), view.max_concurrent))
        paused = view.paused_until_ms > now_ms
        out["ezt_domain_paused"].append(((domain,), 1.0 if paused else 0.0))
        out["ezt_domain_pause_remaining_seconds"].append(((domain,), (view.paused_until_ms - now_ms) / 1000 if paused else 0.0))
        out["ezt_domain_circuit_state"].append(((domain,), CIRCUIT_STATES.get(view.circuit, 0.0)))


CIRCUIT_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def _age_s(now_ms: int, since_ms: int | float | None) -> float:
    return max(0.0, (now_ms - since_ms) / 1000) if since_ms is not None else 0.0

"""The delivery worker: finished jobs in, signed webhook POSTs out, until delivered.

Why Redis Streams and a sorted set, not arq
-------------------------------------------
The rest of the system already moves work this way (edge job streams, the
coordinator's delayed set), and it gives delivery what it needs:

- At least once without a second mechanism. An entry stays in the consumer
  group's pending list until a Lua script has stored its outcome and
  acknowledged it in the same step; a worker killed mid-POST leaves it
  pending, and a live worker takes it over with XAUTOCLAIM after the
  visibility timeout (as ``edge/worker.py`` does). arq would add its own
  queue, in-progress keys, pickled jobs and retry bookkeeping beside ours.
- Our keys. Every key comes from ``common/keys.py`` and shares the job's
  partition hash tag, so recording an outcome, scheduling the retry, counting
  the quorum vote and dead-lettering are one atomic script, on a cluster too.
  arq's keys are its own and not partitioned.
- Routing by region is a stream per route; arq has one queue per worker pool.

Flow
----
0. The edge that finished a job sends the first attempt of its webhooks
   itself (``edge/webhooks.py``); what it leaves comes here: its retries
   (the scheduled set), webhooks bound to other regions (their send streams),
   and a whole job when the edge died or had no room: the hand-off
   ``finish.lua`` wrote, swept once its time has passed
   (``delivery_sweep.lua``, :meth:`DeliveryWorker.sweep_handoffs`), enters at 1.
   With ``EZT_EDGE_DELIVERS_WEBHOOKS=0`` every job enters at 1.
1. ``finish.lua`` (edge) XADDs ``{job}`` to the partition's deliveries stream
   (``{job: step, outcome: fallback}`` when a fallback ended a step: the
   step's webhooks get the final state of the fallback that answered for it,
   ``answered_by``; see ``coordinator/workflows.py``).
2. A worker reads it (group ``delivery``), builds the payload once, and
   ``delivery_plan.lua`` writes the per-webhook state (see
   ``common/deliveries.py``), XADDs one ``{job, hook, customer}`` entry per webhook to
   the send stream of its route, and acks; all or nothing.
3. A worker reads a send entry, POSTs the payload signed with the customer's
   current secrets (``signing.py``), and ``delivery_record.lua`` stores the
   outcome: delivered (a voting webhook counts toward the quorum), a retry
   scheduled in the partition's sorted set (``schedule.py``), or dead
   (dead letters); then acks.
4. Every worker moves due retries from the sorted set to the send streams
   (``delivery_release.lua``, atomic, so several workers may run it).

Routes: a webhook with ``regions`` goes to the send stream of one of those
regions that has a live delivery worker (rotating per attempt: see
``common.deliveries.route_for``), else to the ``any`` stream. A worker with
``EZT_REGION`` reads its region's stream and ``any``; every worker also reads
the streams of regions without a live delivery worker, so nothing waits on a
region that went away. The first success wins: later duplicates change nothing.

Bounded: a worker holds at most ``delivery_concurrency`` entries (plus one
read batch) and POSTs at most that many at once. A live worker re-claims the
entries it holds every third of the visibility timeout, so a slow POST is
never taken over while its worker lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from ..common import delivery_scripts, keys, leases, scripting
from ..common.batching import Batcher
from ..common.config import Settings
from ..common.deliveries import ANY_ROUTE, DEAD, DELIVERED, live_regions, route_for
from ..common.delivery_scripts import Plan, PlannedHook
from ..common.loops import run_every
from ..common.metrics import WEBHOOK_HANDOFFS_SWEPT, WEBHOOK_INFLIGHT, WEBHOOK_RECLAIMED
from ..common.redisconn import UNAVAILABLE, Scripts
from ..common.streams import StreamWorker
from ..common.urls import domain_of
from ..common.webhook_sender import WebhookSender
from ..common.webhooks import FINAL_JOB_STATES, HookState, SendEntry, WebhookPoster, build_payload, now_ms, read_final_job

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
HEARTBEAT_TTL_MS = 3000
RELEASE_BATCH = 500
HANDOFF_SWEEP_BATCH = 100
__all__ = ["DeliveryWorker", "build_payload"]


def _now_ms() -> int:
    return now_ms()


class DeliveryWorker(StreamWorker):
    def __init__(
        self, settings: Settings, redis: RedisClient, scripts: Scripts, sender: WebhookSender, rng: random.Random | None = None
    ) -> None:
        super().__init__(redis, keys.delivery_group(), settings.node_id, settings.visibility_timeout_ms)
        self.settings = settings
        self.scripts = scripts
        self.batch = Batcher(redis)  # the per-entry calls of concurrent deliveries, one pipeline per loop turn
        self.sender = sender
        self.rng = rng or random.Random()
        self.region = settings.region
        self.log_region = settings.region or ANY_ROUTE  # a worker without a region serves any
        self.routes = (ANY_ROUTE, *settings.region_ids)
        self.live: set[str] = set()  # regions with a live delivery worker
        self._capacity = max(settings.delivery_concurrency, 1)
        self._inflight = 0
        self._slot_freed = asyncio.Event()
        self.poster = WebhookPoster(
            settings, redis, scripts, self.batch, sender, node=self.consumer, log_region=self.log_region, by="delivery", rng=self.rng
        )
        self._sweep = scripting.register(redis, "delivery_sweep")

    # -- lifecycle (StreamWorker: stop() stops reading, lets in-flight POSTs finish for a grace, then cancels) --

    def group_streams(self) -> Iterable[str]:
        for p in range(self.settings.partitions):
            yield keys.deliveries(p)
            yield from (keys.delivery_sends(p, r) for r in self.routes)

    async def start(self) -> None:
        await self.ensure_groups()
        await self._beat()
        for p in range(self.settings.partitions):
            turn = partial(self._read_turn, p)
            self.add_loop(self.read_forever(turn, what=f"delivery streams of partition {p}"), name=f"delivery-read:{p}")
        self.add_loop(self._release_loop(), name="delivery-release")
        self.add_loop(self.keep_and_reclaim(), name="delivery-reclaim")
        self.add_loop(self._heartbeat_loop(), name="delivery-heartbeat")

    async def _after_stop(self) -> None:
        if self.region:
            with contextlib.suppress(*UNAVAILABLE):  # it expires on its own
                await leases.release(self.scripts.release_lease, keys.delivery_region_alive(self.region), holder=self.consumer)

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- liveness of regions -----------------------------------------------

    async def _beat(self) -> None:
        if self.region:
            await self.redis.set(keys.delivery_region_alive(self.region), self.consumer, px=HEARTBEAT_TTL_MS)
        self.live = await live_regions(self.redis, self.settings.region_ids)

    async def _heartbeat_loop(self) -> None:
        await run_every(HEARTBEAT_S, self._beat, log=log, failed="delivery heartbeat failed", until=lambda: self.stopping)

    def read_streams(self, partition: int) -> list[str]:
        """The streams this worker reads: deliveries, ``any``, its region's and orphaned regions'."""
        routes = [ANY_ROUTE] + [r for r in self.settings.region_ids if r == self.region or r not in self.live]
        return [keys.deliveries(partition)] + [keys.delivery_sends(partition, r) for r in routes]

    # -- reading -----------------------------------------------------------

    async def _wait_for_slot(self) -> int:
        while self._inflight >= self._capacity:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return self._capacity - self._inflight

    async def _read_turn(self, partition: int) -> None:
        free = await self._wait_for_slot()
        streams = self.read_streams(partition)
        count = max(1, min(free // len(streams), self.settings.read_batch))
        for stream, entries in await self.read(streams, count):
            for entry_id, fields in entries:
                self._spawn(stream, entry_id, fields)

    def _spawn(self, stream: str, entry_id: str, fields: dict[str, str] | None) -> None:
        job_id = (fields or {}).get("job", "")
        self.reader.hold(stream, entry_id, job_id)
        self._inflight += 1
        WEBHOOK_INFLIGHT.inc()
        self.run_in_flight(self._run_entry(stream, entry_id, fields or {}))

    async def _run_entry(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("job", "")
        try:
            partition = keys.job_partition(job_id)
            if partition is None or partition != keys.key_partition(stream) or ("hook" in fields and not fields["hook"].isdigit()):
                # (a job of another partition: its keys are in another slot, no script could serve it)
                log.error("malformed delivery entry %s on %s; dropping", entry_id, stream, extra={"job_id": job_id})
                await self._ack(stream, entry_id)
            elif "hook" in fields:
                await self._send(stream, entry_id, job_id, int(fields["hook"]), fields.get("customer"))
            elif keys.job_partition(fields.get("outcome") or job_id) != partition:
                log.error("malformed delivery entry %s on %s; dropping", entry_id, stream, extra={"job_id": job_id})
                await self._ack(stream, entry_id)
            else:
                await self._plan(stream, entry_id, job_id, fields.get("outcome") or job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The entry stays pending; it is reclaimed after the visibility timeout.
            log.exception("delivery entry crashed", extra={"job_id": job_id, "region": self.log_region})
        finally:
            self.reader.drop(stream, entry_id)
            self._inflight -= 1
            WEBHOOK_INFLIGHT.dec()
            self._slot_freed.set()

    async def _ack(self, stream: str, entry_id: str) -> None:
        await self.reader.ack(stream, entry_id)

    # -- at least once: keep what we hold, take over what the dead held ----

    async def reclaim_stale(self) -> None:
        for p in range(self.settings.partitions):
            for stream in self.read_streams(p):
                async for entries in self.reader.reclaim(stream, count=lambda: min(self._capacity - self._inflight, 100)):
                    for entry_id, fields in entries:
                        WEBHOOK_RECLAIMED.inc()
                        log.info("reclaimed delivery entry %s", entry_id, extra={"job_id": fields.get("job"), "region": self.log_region})
                        self._spawn(stream, entry_id, fields)

    # -- scheduled retries ---------------------------------------------------

    async def release_due(self) -> int:
        moved = 0
        now = _now_ms()
        for p in range(self.settings.partitions):
            moved += await delivery_scripts.release(self.scripts.delivery_release, p, self.routes, now_ms=now, most=RELEASE_BATCH)
        return moved

    async def _release_loop(self) -> None:
        while not self.stopping:
            try:
                await self.sweep_handoffs()
                if await self.release_due() >= RELEASE_BATCH:
                    continue  # a backlog: go again at once
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE:
                log.warning("redis unavailable; webhook retries paused", exc_info=True)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("releasing due webhook retries failed")
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.settings.delivery_poll_s)

    # -- hand-offs an edge did not deliver (finish.lua, edge/webhooks.py) -------

    async def sweep_handoffs(self) -> int:
        """Take over the hand-offs whose time has passed: their edge died, or could not take them."""
        now = _now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.settings.partitions):
                pipe.zrangebyscore(keys.delivery_handoff(p), "-inf", now, start=0, num=HANDOFF_SWEEP_BATCH)
            due: list[list[str]] = await pipe.execute()
        taken = 0
        for p, members in enumerate(due):
            for member in members:
                job_id = member.partition("|")[0]
                if keys.job_partition(job_id) != p:
                    log.error("malformed hand-off %r; dropping", member)
                    await self.redis.zrem(keys.delivery_handoff(p), member)
                    continue
                if await delivery_scripts.sweep(self._sweep, p, member, self.routes, now_ms=now):
                    taken += 1
                    WEBHOOK_HANDOFFS_SWEPT.inc()
                    log.info("took over webhooks an edge did not send in time", extra={"job_id": job_id, "region": self.log_region})
        return taken

    # -- a finished job enters delivery --------------------------------------

    async def _plan(self, stream: str, entry_id: str, job_id: str, answered_by: str) -> None:
        """Plan ``job_id``'s webhooks with the final state of ``answered_by``: the job itself, or the
        fallback that ended its step (the webhooks, quorum, metadata, id and key stay the step's)."""
        job, attempts = await read_final_job(self.batch, job_id, answered_by)
        if not job or job.get("state") not in FINAL_JOB_STATES:
            log.warning("job is gone or not final; nothing to deliver", extra={"job_id": job_id, "region": self.log_region})
            await self._ack(stream, entry_id)
            return
        spec = orjson.loads(job["spec"])
        hooks = spec.get("webhooks") or []
        if not hooks:
            await self._ack(stream, entry_id)
            return
        now = _now_ms()
        webhooks = [
            PlannedHook(h["url"], h.get("has_quorum_vote", True), h.get("regions") or [], route_for(h.get("regions") or [], 0, self.live))
            for h in hooks
        ]
        the_plan = Plan(
            job_id, job["customer"], spec.get("webhook_quorum", 1), build_payload(job_id, job, spec, attempts, answered_by),
            int(job.get("finished_ms") or now), job["state"], webhooks, now, self.settings.job_ttl_s,
        )  # fmt: skip
        run = partial(self.batch.script, self.scripts.delivery_plan)
        planned = await asyncio.shield(
            delivery_scripts.plan(run, the_plan, stream=stream, group=self.group, entry_id=entry_id, routes=self.routes)
        )
        if planned:
            log.debug(  # each POST logs its outcome at INFO
                "delivering to %d webhook(s)",
                len(hooks),
                extra={"job_id": job_id, "region": self.log_region, "domain": domain_of(spec["url"]), "customer": job["customer"]},
            )

    # -- one POST ------------------------------------------------------------

    async def _send(self, stream: str, entry_id: str, job_id: str, hook: int, customer_hint: str | None = None) -> None:
        hooks_key = keys.job_webhooks(job_id)
        p = f"{hook}:"
        # An entry from delivery_plan.lua names the customer: its secrets are read
        # in the same round trip as the webhook's state (a retry's entry does not).
        stored: asyncio.Future[Any] | None = None
        if customer_hint:
            stored = self.poster.read_secrets(customer_hint)  # None: this process has them from the last second
            if stored is not None:
                stored.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, even if unused
        customer, payload, url, state, attempts, since_ms, regions, window_base = await self.batch.execute(
            "HMGET",
            hooks_key,
            "customer",
            "payload",
            p + "url",
            p + "state",
            p + "attempts",
            p + "since_ms",
            p + "regions",
            p + "window_base",
        )
        if customer is None or state is None or url is None or payload is None:
            log.warning("delivery state is gone; dropping send", extra={"job_id": job_id, "region": self.log_region})
            await self._ack(stream, entry_id)
            return
        if state in (DELIVERED, DEAD):  # a duplicate entry: the webhook is settled
            await self._ack(stream, entry_id)
            return
        h = HookState(
            job_id=job_id,
            hook=hook,
            customer=customer,
            payload=payload,
            url=url,
            attempts=int(attempts or 0),
            since_ms=int(since_ms) if since_ms else None,
            regions=regions or "",
            window_base=int(window_base or 0),
        )
        await self.poster.post(h, SendEntry(stream, entry_id, self.group), self.live, stored if customer == customer_hint else None)

"""The first attempt of a finished job's webhooks, sent by the edge that finished it.

Without this the job's webhooks took one more process hop and one more HTTP
exchange: ``finish.lua`` XADDed the job to the delivery stream, and the
delivery service read it, planned and sent. Now (``EZT_EDGE_DELIVERS_WEBHOOKS``,
on by default):

1. ``finish.lua``, in the step that decides the job, hands its webhooks to this
   edge: a member of the partition's hand-off set (``keys.delivery_handoff``),
   scored ``now + EZT_EDGE_WEBHOOK_GRACE_S``, returned to the caller.
2. This edge builds the payload (``common/webhooks.py``) from what it sent
   ``finish.lua`` and what the script answered (the job's own hand-off; any
   other, such as a workflow step's, is read back first).
3. The usual job, one webhook that this edge sends: it is POSTed at once, and
   its record (``delivery_record.lua``) writes the webhooks' state as
   ``delivery_claim.lua`` would have, the outcome, and the hand-off's end, in
   one step; a POST still going when half the hand-off's grace is over holds
   the hand-off for one POST more. Any other (several webhooks, or one for
   another region's egress): the hand-off is claimed first with
   ``delivery_claim.lua``, which writes the webhooks' state as the delivery
   service writes it, marks the webhooks this edge sends as its own, queues
   the others (``regions`` without this one) for the delivery service, and
   holds the hand-off for one POST's time more; then each of this edge's is
   POSTed once and recorded by ``delivery_record.lua``. Either way a POST
   goes through the same :class:`~ezthrottle_server.common.webhooks.WebhookPoster`
   as the delivery service's (host pace, outbound policy, signature,
   timeout, no redirects), and its record is: delivered (the quorum counted),
   or a retry scheduled for the delivery service, or a dead letter. One that
   its host's pace puts back is claimed first, then left to the delivery
   service.
4. The hand-off is removed (by the record, for one webhook).

At least once: an edge that dies (or stops, or has no room) between 1 and 4
leaves the hand-off; when its time has passed the delivery service sweeps it
(``delivery_sweep.lua``): a job not claimed enters delivery as before, and a
claimed one's webhooks still pending and this edge's are queued to be sent.
Never twice in the normal case: the delivery service takes only hand-offs
whose time has passed, and the claim (or the first record) and the sweep are
each atomic, so one of them has it; a record that finds the hand-off swept
writes nothing. A POST slower than the time the hand-off is held for may be
repeated by the delivery service (the same ``webhook-id``: receivers drop it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from ..common import delivery_scripts, keys, scripting
from ..common.batching import Batcher
from ..common.config import Settings
from ..common.deliveries import ANY_ROUTE, live_regions, route_for
from ..common.delivery_scripts import Plan, PlannedHook
from ..common.metrics import WEBHOOK_HANDED_OVER
from ..common.redisconn import Scripts
from ..common.urls import domain_of
from ..common.webhook_sender import WebhookSender
from ..common.webhooks import (
    FINAL_JOB_STATES,
    HookState,
    SendEntry,
    Unclaimed,
    WebhookPoster,
    build_payload,
    handoff_parts,
    now_ms,
    read_final_job,
)

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient
    from .executor import Executor

log = logging.getLogger(__name__)

HAND_OVER_AHEAD_MS = 365 * 24 * 3600 * 1000  # a time past every hand-off's: the sweep takes it now
HOLD_MARGIN_MS = 5000  # a claimed hand-off is held for a POST's timeout, plus this
LIVE_REGIONS_TTL_S = 1.0  # regions with a live delivery worker, read at most this often (routes of regional webhooks)


@dataclass(slots=True)
class KnownJob:
    """A hand-off's job as the edge that just finished it knows it: what it would read back."""

    member: str  # the hand-off (the job's own)
    record: dict[str, str]  # the final record, as far as the payload reads it (job_scripts.FinalRecord.record)
    attempts: int
    spec: dict[str, Any]


class EdgeWebhooks:
    """The webhooks of the jobs this edge finishes: their first POSTs, at most ``delivery_concurrency`` jobs at once."""

    def __init__(self, settings: Settings, redis: RedisClient, scripts: Scripts, batch: Batcher, executor: Executor) -> None:
        assert settings.region is not None
        self.settings = settings
        self.redis = redis
        self.batch = batch
        self.region = settings.region
        self.executor = executor  # its outbound policy and resolver are the webhooks' too: one view of the network per edge
        self.sender = WebhookSender(settings, executor.policy)
        self.poster = WebhookPoster(settings, redis, scripts, batch, self.sender, node=settings.node_id, log_region=self.region, by="edge")
        self.grace_ms = max(1, int(settings.edge_webhook_grace_s * 1000))  # finish.lua's hand-off grace
        self.hold_ms = self.grace_ms + int(settings.delivery_timeout_s * 1000) + HOLD_MARGIN_MS
        self.routes = (ANY_ROUTE, *settings.region_ids)
        self._claim = scripting.register(redis, "delivery_claim")
        # the jobs whose webhooks are being sent at once: as many as this edge runs attempts (their POSTs: the poster's bound)
        self._capacity = max(settings.executor_concurrency, settings.delivery_concurrency, 1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._overflow: list[str] = []  # hand-offs this edge has no room for: given to the delivery service at once
        self._handing_over: asyncio.Task[None] | None = None
        self._sweep = scripting.register(redis, "delivery_sweep")
        self._started = asyncio.Lock()
        self._live: set[str] = set()
        self._live_at = 0.0
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------

    def offer(self, members: Iterable[str], known: KnownJob | None = None) -> None:
        """Deliver the hand-offs ``finish.lua`` just made (``known``: one of them as this edge knows it, not
        read back); any this edge has no room for waits for the delivery service."""
        if self.settings.test_hold_edge_webhooks:  # tests only: as if this edge died right after finishing
            return
        for member in members:
            if self._stopping or len(self._tasks) >= self._capacity:
                self._overflow.append(member)
                continue
            task = asyncio.create_task(self._deliver(member, known if known is not None and known.member == member else None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._overflow and not self._stopping and (self._handing_over is None or self._handing_over.done()):
            self._handing_over = asyncio.create_task(self._hand_over())

    async def _hand_over(self) -> None:
        """Give the hand-offs this edge has no room for to the delivery service now, not after their grace
        (delivery_sweep.lua with a time past every hand-off's); one that fails waits for the grace."""
        run = partial(self.batch.script, self._sweep)
        while self._overflow:
            member = self._overflow.pop()
            partition = keys.job_partition(handoff_parts(member)[0])
            assert partition is not None
            try:
                await delivery_scripts.sweep(run, partition, member, self.routes, now_ms=now_ms() + HAND_OVER_AHEAD_MS)
                WEBHOOK_HANDED_OVER.inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not hand a job's webhooks over; the delivery service takes them after the grace", exc_info=True)

    async def stop(self, grace_s: float) -> None:
        """Let the webhooks in flight finish for ``grace_s``, then cancel them (their hand-offs go to the delivery service)."""
        self._stopping = True
        if self._handing_over is not None:
            await asyncio.wait([self._handing_over], timeout=grace_s)
            self._handing_over.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.sender.close()

    async def _claim_handoff(self, plan: Plan, member: str, partition: int) -> int:
        """``delivery_claim.lua``: how many of the job's webhooks this edge sends (0: none, or the delivery service has them)."""
        run = partial(self.batch.script, self._claim)
        return await asyncio.shield(
            delivery_scripts.claim(
                run, plan, member=member, held_until_ms=now_ms() + self.hold_ms, node=self.settings.node_id, routes=self.routes
            )
        )

    def _hold(self, handoff: str, member: str) -> None:
        """Keep a hand-off whose webhook is being POSTed, not claimed yet, from the sweep for one POST more (if still there)."""
        held = self.batch.execute("ZADD", handoff, "XX", now_ms() + self.hold_ms, member)
        held.add_done_callback(lambda f: f.cancelled() or f.exception())  # if it fails, the sweep may send it again: at least once

    async def _live_regions(self) -> set[str]:
        if time.monotonic() - self._live_at > LIVE_REGIONS_TTL_S:
            self._live = await live_regions(self.redis, self.settings.region_ids)
            self._live_at = time.monotonic()
        return self._live

    # -- one job's webhooks ------------------------------------------------------

    async def _deliver(self, member: str, known: KnownJob | None = None) -> None:
        job_id = handoff_parts(member)[0]
        try:
            async with self._started:
                if not self.sender.started:
                    self.sender.resolver = self.executor.resolver
                    await self.sender.start()
            await self._deliver_handoff(member, known)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning(
                "sending a job's webhooks failed; the delivery service takes them after the grace", exc_info=True, extra={"job_id": job_id}
            )

    async def _deliver_handoff(self, member: str, known: KnownJob | None = None) -> None:
        job_id, answered_by = handoff_parts(member)
        partition = keys.job_partition(job_id)
        assert partition is not None
        handoff = keys.delivery_handoff(partition)
        if known is not None:
            job, attempts, spec = known.record, known.attempts, known.spec
        else:
            job, attempts = await read_final_job(self.batch, job_id, answered_by)
            if not job or job.get("state") not in FINAL_JOB_STATES:
                return  # gone: the delivery service's sweep finds nothing to send either
            spec = orjson.loads(job["spec"])
        hooks: list[dict[str, Any]] = spec.get("webhooks") or []
        if not hooks:
            await self.batch.execute("ZREM", handoff, member)
            return
        per_hook: list[tuple[str, str, bool]] = []  # url, regions, this edge sends it
        live: set[str] = set()
        if any(h.get("regions") for h in hooks):
            live = await self._live_regions()
        planned: list[PlannedHook] = []
        for h in hooks:
            regions = h.get("regions") or []
            mine = not regions or self.region in regions
            per_hook.append((h["url"], ",".join(regions), mine))
            planned.append(PlannedHook(h["url"], h.get("has_quorum_vote", True), regions, "" if mine else route_for(regions, 0, live)))
        now = now_ms()
        payload = build_payload(job_id, job, spec, attempts, answered_by)
        plan = Plan(
            job_id=job_id,
            customer=job["customer"],
            quorum=spec.get("webhook_quorum", 1),
            payload=payload,
            finished_ms=int(job.get("finished_ms") or now),
            status=job["state"],
            hooks=planned,
            now_ms=now,
            ttl_s=self.settings.job_ttl_s,
        )
        # the customer's secrets are read in the next round trip (batched: the claim's, or the host pace's), before they are needed
        stored = self.poster.read_secrets(job["customer"])  # None: this process has them from the last second
        if stored is not None:
            stored.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, even if unused
        claim = partial(self._claim_handoff, plan, member, partition)
        unclaimed: Unclaimed | None = None
        if len(per_hook) == 1 and per_hook[0][2]:  # the usual one webhook, this edge's: POSTed first, claimed by its record
            unclaimed = Unclaimed(plan, claim, partial(self._hold, handoff, member), hold_at_ms=plan.finished_ms + self.grace_ms // 2)
        elif await claim() <= 0:
            return  # none of them is this edge's, or the delivery service has them
        src = SendEntry(keys.delivery_sends(partition, ANY_ROUTE), "", keys.delivery_group(), edge=True)
        text = payload.decode()
        own_hooks = [
            HookState(job_id, i, job["customer"], text, url, 0, now, where, 0) for i, (url, where, own) in enumerate(per_hook) if own
        ]
        log.debug(  # each POST logs its outcome at INFO
            "delivering to %d webhook(s)",
            len(own_hooks),
            extra={"job_id": job_id, "region": self.region, "domain": domain_of(spec["url"]), "customer": job["customer"]},
        )
        if len(own_hooks) == 1:  # one of them this edge's: no task for it, and its record removes the hand-off
            if await self.poster.post(own_hooks[0], src, live, stored, handoff=member, unclaimed=unclaimed):
                return
        else:
            await asyncio.gather(*(self.poster.post(hook, src, live, stored) for hook in own_hooks))
        await self.batch.execute("ZREM", handoff, member)

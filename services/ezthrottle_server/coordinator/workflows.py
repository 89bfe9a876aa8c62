"""Workflow chains on the server: start each job's continuation, once.

``finish.lua`` adds ``{job, event: final}`` to the partition's workflow
stream when a job with a chain reaches its final outcome, atomically with the
outcome. Workflow timers (``on_failure_timeout_ms``, fallbacks triggered
``on_timeout``, and a job's ``start_before_ms``: the ``deadline`` timer, which
expires a job not started by then through ``cancel.lua``) wait in the
partition's timer set and are moved to the same
stream when due. Every coordinator reads the stream through the consumer
group ``workflow`` (the active one when woken by an event or a timer due,
coordinator/wake.py, at most every ``poll_s``; a standby every
``standby_poll_s``, so a dead leader holds nothing up), decides the
continuation with the rules of
:mod:`ezthrottle_server.common.workflows`, and starts it with
``spawn_child.lua``, which claims the parent's one continuation and creates
the child job in the same call; only then is the entry acknowledged. A crash
in between leaves the entry pending, and the repeat finds the child already
there; two coordinators handling two entries of one parent (its outcome and
a timer) start one child between them. FRUGAL continuations are claimed but not started: they travel to the
client in the webhook payload.

Each child is a job of its own (its id, webhooks, pacing, regions chosen by
health like a submission), in its parent's partition, linked by ``parent``,
``root`` and ``relation``; the parent records ``child:<relation>``.

Webhooks belong to a *step*: a job and the fallbacks that stand in for it.
The step's webhooks receive one payload, with the step's own ``job_id`` and
``idempotent_key`` and the outcome of the chain's last link: a fallback
records its step (``step``) and delivers to it when it ends without a
further fallback (``finish.lua``); a failed job whose server-run fallback
did not start (its trigger did not match) is handed to delivery here.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..common import job_index, keys, quotas, workflow_scripts, workflows
from ..common.cancels import end_job
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.jobs import record_fields
from ..common.quotas import USAGE_TTL_S, month_of
from ..common.redisconn import Scripts
from ..common.routing import RegionStates, choose_regions
from ..common.streams import GroupConsumer
from ..common.urls import domain_of
from ..common.workflow_scripts import Spawned
from ..pacing.limiter import circuit_open
from ..pacing.scope import SHARED
from .lease import Leadership
from .loop import CoordinatorLoop
from .wake import Wakes

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from ..common.redisconn import RedisClient

log = logging.getLogger(__name__)

FINAL = workflows.FINAL_STATES


def step_of(job_id: str, job: dict[str, str]) -> str | None:
    """The job whose webhooks this job's outcome is delivered to: itself, or the step its fallback chain stands in for."""
    return job.get("step") or (job_id if job.get("has_webhooks") == "1" else None)


def child_fields(
    parent_id: str, parent: dict[str, str], relation: str, child: dict[str, Any], regions: list[str], now_ms: int
) -> dict[str, Any]:
    """The record of a child job, as the submit path would write it.

    A fallback stands in for its step: its outcome goes to the step's
    webhooks (``step``, see finish.lua). Other children are steps of their own.
    """
    links: dict[str, Any] = {"parent": parent_id, "root": parent.get("root") or parent_id, "relation": relation}
    step = step_of(parent_id, parent) if relation == workflows.FALLBACK else None
    if step:
        links["step"] = step
    return record_fields(
        child,
        customer=parent["customer"],
        idempotent_key=child.get("idempotent_key") or f"{parent.get('idempotent_key', parent_id)}:{relation}",
        regions=regions,
        now_ms=now_ms,
        **links,
    )


class WorkflowSpawner(CoordinatorLoop):
    what = "workflow pass"
    poll_s = 0.05
    standby_poll_s = 0.25  # a dead leader holds nothing up: each entry's repeat finds its child there
    wakes_on = ("timers", "spawn")
    reclaim_s = 1.0  # a dead coordinator's entries are looked for this often (their visibility timeout is longer)

    def __init__(self, settings: Settings, redis: RedisClient, scripts: Scripts, lease: Leadership, wakes: Wakes | None = None) -> None:
        super().__init__(settings, redis, scripts, lease, wakes=wakes)
        self.group = keys.workflow_group()
        self.consumer = settings.node_id
        self.reader = GroupConsumer(redis, self.group, self.consumer, settings.visibility_timeout_ms)
        self.regions = RegionStates(redis, settings.region_ids)
        self._reclaimed = 0.0  # monotonic time of the last look for a dead coordinator's entries

    async def ensure_groups(self) -> None:
        await self.reader.ensure_groups(keys.workflow_spawn(p) for p in range(self.settings.partitions))

    async def run(self) -> None:
        await self.ensure_groups()
        await super().run()

    async def poll(self) -> bool:
        return await self.step() > 0

    async def step(self) -> int:
        """Fire due timers, then handle workflow entries (new ones and a dead reader's). Returns the work done."""
        now = int(time.time() * 1000)
        done = 0
        next_due: list[int] = []
        reclaim = time.monotonic() - self._reclaimed >= self.reclaim_s
        if reclaim:
            self._reclaimed = time.monotonic()
        for p in range(self.settings.partitions):
            swept = await workflow_scripts.fire_timers(self.scripts.fire_timers, p, now_ms=now, most=500)
            done += swept.moved
            if swept.next_ms is not None:
                next_due.append(swept.next_ms)
            stream = keys.workflow_spawn(p)
            reply = await self.redis.xreadgroup(self.group, self.consumer, {stream: ">"}, count=100)
            entries = [e for _s, batch in reply or () for e in batch]
            if reclaim:
                async for stale in self.reader.reclaim(stream, pages=1):  # a dead coordinator's, one page a look
                    entries += stale
            for entry_id, fields in entries:
                await self.handle(p, fields.get("job", ""), fields.get("event", "final"))
                await self.reader.ack(stream, entry_id)
                done += 1
        self.next_due_ms = min(next_due, default=None)
        return done

    async def handle(self, partition: int, job_id: str, event: str) -> None:
        if keys.job_partition(job_id) is None:
            log.error("malformed workflow entry for %r; dropped", job_id)
            return
        if event == workflows.DEADLINE_TIMER:  # start_before_ms: not started by now, the job ends expired
            now = int(time.time() * 1000)
            held = await self._held_by_circuit(job_id)  # ...or failed, circuit_open, if its domain's circuit held it
            await end_job(self.redis, self.scripts, self.settings, job_id, customer="", now_ms=now, expire=True, circuit_open=held)
            return
        parent = await self.redis.hgetall(keys.job(job_id))  # type: ignore[misc]  # redis-py#2399
        if not parent:
            return  # expired: nothing to continue
        if parent.get("state") == workflows.CANCELLED:
            return  # a cancelled job's chain stops (cancel.lua claimed its continuation too)
        spec = orjson.loads(parent["spec"])
        state = parent.get("state", "")
        if event == "final":
            result = orjson.loads(parent["result"]) if parent.get("result") else None
            status_code = (result or {}).get("status_code")
            step = workflows.next_step(spec, state, status_code, parent.get("error") or None)
        elif event == workflows.FAILURE_TIMER:
            step = None if state == "success" else workflows.timer_step(spec, event)
        elif event == workflows.FALLBACK_TIMER:
            step = None if state in FINAL else workflows.timer_step(spec, event)
        else:
            log.error("unknown workflow event %r for %s", event, job_id, extra={"job_id": job_id})
            return
        if step is not None:
            relation, child = step
            if workflows.is_frugal(child):
                # The client runs it, from the webhook payload; claiming it ends the server's part.
                await workflow_scripts.claim_continuation(self.scripts.claim_continuation, job_id, relation)
            else:
                await self.spawn(partition, job_id, parent, relation, child)
        if event == "final" and state in (workflows.FAILED, workflows.EXPIRED) and parent.get("fallback") == "1":
            await self._deliver_unless_a_fallback_follows(partition, job_id, parent)

    async def _held_by_circuit(self, job_id: str) -> bool:
        """Whether the circuit breaker of the job's target domain is open (for the domain, or the customer's scope of it)."""
        customer, spec = await self.redis.hmget(keys.job(job_id), ["customer", "spec"])  # type: ignore[misc]  # redis-py#2399
        try:
            domain = domain_of(orjson.loads(spec)["url"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        return await circuit_open(self.redis, domain, [SHARED, customer or ""])

    async def _deliver_unless_a_fallback_follows(self, partition: int, job_id: str, job: dict[str, str]) -> None:
        """A failed job whose fallback the server could have run (finish.lua left its webhooks to us):
        its step's webhooks get this outcome unless a fallback took the step over."""
        step = step_of(job_id, job)
        if step is None:
            return
        cont = await self.redis.hget(keys.job(job_id), "cont")  # type: ignore[misc]  # redis-py#2399
        if cont == workflows.FALLBACK:  # a fallback (started now, or by a timer) carries the step on
            return
        fields: dict[FieldT, EncodableT] = {"job": step} if step == job_id else {"job": step, "outcome": job_id}
        await self.redis.xadd(keys.deliveries(partition), fields)  # planned once per step (delivery_plan.lua)
        log.debug("no fallback followed; the step's webhooks get its outcome", extra={"job_id": job_id})

    async def spawn(self, partition: int, parent_id: str, parent: dict[str, str], relation: str, child: dict[str, Any]) -> str | None:
        now = int(time.time() * 1000)
        here = parent.get("winner") or (parent.get("regions") or self.settings.region_ids[0]).split(",")[0]
        try:
            regions = choose_regions(
                child.get("regions"), child.get("region_policy", "fallback"), here, await self.regions.states(), self.settings.region_ids
            )
        except ApiError as exc:
            log.warning("no region for %s of %s: %s; using %s", relation, parent_id, exc.message, here, extra={"job_id": parent_id})
            regions = [here]
        spawn = workflow_scripts.Child(
            parent_id=parent_id, child_id=keys.make_job_id(now, secrets.token_hex(8), partition), customer=parent["customer"],
            relation=relation, fields=child_fields(parent_id, parent, relation, child, regions, now), streams=regions,
            timers=workflows.timers_for(child, now), due_ms=child.get("retry_at") or 0, now_ms=now, month=month_of(),
            domain=domain_of(child["url"]), index_ttl_s=job_index.ttl_s(self.settings), usage_ttl_s=USAGE_TTL_S,
        )  # fmt: skip
        reply = await workflow_scripts.spawn_child(self.scripts.spawn_child, spawn)
        if reply.spawned is Spawned.CLAIMED_BEFORE:
            log.info("%s of %s not started: %s came first", relation, parent_id, reply.claimed, extra={"job_id": parent_id})
            return None
        if reply.spawned is Spawned.CREATED and self.settings.partitions > 1:  # the cap's hold (edge/quota.py), as a submission takes one
            await quotas.hold(self.scripts.reserve_quota, keys.quota_reservations(parent["customer"], spawn.month), cap=None)
        log.info("%s of %s is job %s", relation, parent_id, reply.child_id, extra={"job_id": parent_id})
        return reply.child_id

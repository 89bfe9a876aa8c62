"""Acceptance: a validated job becomes durable, or is refused, by one path for every service.

The edge's submissions (``edge/intake.py``) and the coordinator firing a
schedule (:func:`accept_job`) both go through the functions here: the job's
idempotent key, partition and id, its record (:func:`ticket`,
:func:`~.jobs.record_fields`), the customer's monthly quota (:func:`quota_left`
for ``submit.lua`` on one partition, :func:`hold_quota` in the customer's own
counter with several: ``edge/quota.py`` says why) and its ceiling of jobs not
yet final (:func:`queued_left`), its byte budget (``common/storage.py``), and what ``submit.lua`` writes all or nothing
(:func:`submission`). What only an edge has stays there: the regions chosen
from its live view, the fast path (a job taken as it is written), the
request's own admission check (Redis memory: the edge sheds new requests,
accepted work is never dropped) and the HTTP answers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from . import job_index, job_scripts, keys, quotas
from .config import Settings
from .job_scripts import Submission, SubmitReply, Submitted
from .jobs import hash_key, key_digest, record_fields
from .quotas import USAGE_TTL_S, Tier, month_at_ms
from .redisconn import Scripts
from .storage import NO_BUDGET, Room
from .workflows import timers_for

if TYPE_CHECKING:
    from .batching import Batcher
    from .redisconn import RedisClient
    from .storage import ByteBudget


async def tier_of(redis: RedisClient, settings: Settings, customer: str) -> Tier:
    """The customer's tier (``keys.customer``'s ``tier``, else the default)."""
    name: str = await redis.hget(keys.customer(customer), "tier") or settings.default_tier  # type: ignore[misc]
    return settings.tiers.get(name) or settings.tiers[settings.default_tier]


async def queued_left(redis: RedisClient, settings: Settings, customer: str, partition: int, *, batch: Batcher | None = None) -> int:
    """How many more jobs ``customer`` may have not yet final in ``partition`` (-1: no ceiling); as edge/admission.py.

    ``batch``: read through it (the edge's), so that concurrent acceptances (a batch's jobs) go on in the order
    they asked, their answers coming back in order on one connection."""
    ceiling = settings.admission_max_queued_per_customer
    if not ceiling:
        return -1
    if settings.partitions == 1:
        return ceiling
    others = [p for p in range(settings.partitions) if p != partition]
    if batch is not None:
        counts = await asyncio.gather(*(batch.execute("HGET", keys.queued(p), customer) for p in others))
    else:
        async with redis.pipeline(transaction=False) as pipe:
            for p in others:
                pipe.hget(keys.queued(p), customer)
            counts = await pipe.execute()
    return max(0, ceiling - sum(int(v or 0) for v in counts))


@dataclass(slots=True)
class Ticket:
    """A validated job about to be written (:func:`ticket`): its idempotent key, partition, id and record."""

    customer: str
    job_id: str
    idempotent_key: str
    digest: str  # of the customer and the idempotent key
    partition: int
    now_ms: int
    month: str  # the quota's
    fields: dict[str, Any]  # the record

    @property
    def idempotency(self) -> str:
        """The key ``submit.lua`` dedupes on."""
        return keys.idempotency(self.partition, self.customer, self.digest)


def ticket(
    settings: Settings,
    job: Mapping[str, Any],
    customer: str,
    regions: Sequence[str],
    *,
    now_ms: int,
    links: Mapping[str, Any] | None = None,
) -> Ticket:
    """The job's idempotent key (its own, else the HASH of customer, method, url and body), partition, id and record.

    ``links`` are extra record fields (``schedule``).
    """
    idem = job["idempotent_key"] or hash_key(customer, dict(job))
    digest = key_digest(customer, idem)
    partition = int(digest[:8], 16) % settings.partitions
    job_id = keys.make_job_id(now_ms, secrets.token_hex(8), partition)
    fields = record_fields(job, customer=customer, idempotent_key=idem, regions=regions, now_ms=now_ms, **(links or {}))
    return Ticket(customer, job_id, idem, digest, partition, now_ms, month_at_ms(now_ms), fields)


def quota_left(settings: Settings, tier: Tier) -> int:
    """The cap ``submit.lua`` checks (-1: none; with several partitions :func:`hold_quota` holds it instead)."""
    return tier.cap if tier.cap is not None and settings.partitions == 1 else -1


async def hold_quota(
    redis: RedisClient, scripts: Scripts, settings: Settings, tier: Tier, t: Ticket, *, batch: Batcher | None = None
) -> tuple[bool, str | None]:
    """With several partitions and a capped tier, hold one request of the cap in the customer's counter.

    ``(allowed, held)``: ``held`` is the counter to :func:`give_back` to if
    the submission creates nothing; ``(True, None)`` when nothing needs
    holding (one partition: ``submit.lua`` checks the cap itself; no cap; a
    known duplicate, which is free); ``(False, None)`` when the cap is reached.
    ``batch``: as :func:`queued_left`'s: a batch's holds reach the counter in the batch's order, and the cap
    refuses its last jobs.
    """
    if settings.partitions == 1 or tier.cap is None:
        return True, None
    known = await (batch.execute("EXISTS", t.idempotency) if batch is not None else redis.exists(t.idempotency))
    if known:
        return True, None  # a duplicate: submit.lua answers it without counting
    counter = keys.quota_reservations(t.customer, t.month)
    run = partial(batch.script, scripts.reserve_quota) if batch is not None else scripts.reserve_quota
    if not await quotas.hold(run, counter, cap=tier.cap):
        return False, None
    return True, counter


async def give_back(scripts: Scripts, held: str | None) -> None:
    """Give back what :func:`hold_quota` held (the submission created nothing)."""
    if held is not None:
        await quotas.give_back(scripts.reserve_quota, held)


def submission(
    settings: Settings,
    t: Ticket,
    job: Mapping[str, Any],
    *,
    streams: Sequence[str],
    domain: str,
    quota_left: int,
    queued_left: int,
    room: Room = NO_BUDGET,
) -> Submission:
    """What ``submit.lua`` writes for the ticket: ``streams``, the regions whose stream gets an entry (none for a job
    taken at once); ``domain``, the url's ``host:port`` (the job index)."""
    return Submission(
        job_id=t.job_id, customer=t.customer, digest=t.digest, month=t.month, fields=t.fields,
        streams=streams, timers=timers_for(dict(job), t.now_ms), due_ms=job.get("retry_at") or 0, now_ms=t.now_ms,
        idempotency_ttl_s=settings.idempotency_ttl_s, usage_ttl_s=USAGE_TTL_S, quota_left=quota_left, queued_left=queued_left,
        domain=domain, index_ttl_s=job_index.ttl_s(settings), bytes_left=room.left, bytes_ended=room.ended,
    )  # fmt: skip


async def accept_job(
    redis: RedisClient,
    scripts: Scripts,
    settings: Settings,
    job: Mapping[str, Any],
    customer: str,
    regions: Sequence[str],
    domain: str,
    *,
    now_ms: int | None = None,
    links: Mapping[str, Any] | None = None,
    budget: ByteBudget | None = None,
) -> SubmitReply:
    """Write a validated job through ``submit.lua``: created, a duplicate of its idempotent key, or refused.

    For a service that is not an edge (the coordinator firing a schedule): the
    job goes through its regions' streams, read by their edges. ``regions``
    are already chosen (``common/routing.py``); ``domain`` is the url's
    ``host:port`` (``common.urls.domain_of``, for the job index); ``links``
    are extra record fields (``schedule``); ``budget``, the customers' byte
    budgets (``common/storage.py``). A job over the quota is answered
    ``QUOTA_SPENT`` (the edge's 429).
    """
    t = ticket(settings, job, customer, regions, now_ms=int(time.time() * 1000) if now_ms is None else now_ms, links=links)
    tier = await tier_of(redis, settings, customer)
    allowed, held = await hold_quota(redis, scripts, settings, tier, t)
    if not allowed:
        return SubmitReply(Submitted.QUOTA_SPENT, "", "")
    left = await queued_left(redis, settings, customer, t.partition)
    room = await budget.room(customer, t.partition) if budget is not None else NO_BUDGET
    cap = quota_left(settings, tier)
    written = submission(settings, t, job, streams=regions, domain=domain, quota_left=cap, queued_left=left, room=room)
    reply = await job_scripts.submit(scripts.submit, written)
    if reply.submitted is not Submitted.CREATED:
        await give_back(scripts, held)
    elif budget is not None:
        budget.added(customer, t.partition, reply.bytes)
    return reply

"""Acceptance of a job by a service that is not an edge (the coordinator firing a schedule).

The same path as a submission (``edge/intake.py``): the job's idempotent key,
partition and id, its record (:func:`~.jobs.record_fields`), the customer's
monthly quota and its ceiling of jobs not yet final, and ``submit.lua``, which
writes it all or nothing. What only an edge has is left out: the fast path
(the job goes through its regions' streams, read by their edges) and the
request's own admission checks (Redis memory: the edge sheds new requests,
accepted work is never dropped).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import job_index, job_scripts, keys, quotas
from .config import Settings
from .job_scripts import Submission, SubmitReply, Submitted
from .jobs import hash_key, key_digest, record_fields
from .quotas import USAGE_TTL_S, Tier, month_of
from .redisconn import Scripts
from .workflows import timers_for

if TYPE_CHECKING:
    from .redisconn import RedisClient


async def tier_of(redis: RedisClient, settings: Settings, customer: str) -> Tier:
    """The customer's tier (``keys.customer``'s ``tier``, else the default)."""
    name: str = await redis.hget(keys.customer(customer), "tier") or settings.default_tier  # type: ignore[misc]
    return settings.tiers.get(name) or settings.tiers[settings.default_tier]


async def queued_left(redis: RedisClient, settings: Settings, customer: str, partition: int) -> int:
    """How many more jobs ``customer`` may have not yet final in ``partition`` (-1: no ceiling); as edge/admission.py."""
    ceiling = settings.admission_max_queued_per_customer
    if not ceiling:
        return -1
    if settings.partitions == 1:
        return ceiling
    others = [p for p in range(settings.partitions) if p != partition]
    async with redis.pipeline(transaction=False) as pipe:
        for p in others:
            pipe.hget(keys.queued(p), customer)
        counts = await pipe.execute()
    return max(0, ceiling - sum(int(v or 0) for v in counts))


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
) -> SubmitReply:
    """Write a validated job through ``submit.lua``: created, a duplicate of its idempotent key, or refused.

    ``regions`` are already chosen (``common/routing.py``); ``domain`` is the
    url's ``host:port`` (``common.urls.domain_of``, for the job index);
    ``links`` are extra record fields (``schedule``). The quota is checked and counted as
    for a submission: in the script on one partition, held first in the
    customer's own counter with several (``edge/quota.py`` says why).
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    idem = job["idempotent_key"] or hash_key(customer, dict(job))
    digest = key_digest(customer, idem)
    partition = int(digest[:8], 16) % settings.partitions
    job_id = keys.make_job_id(now, secrets.token_hex(8), partition)
    fields = record_fields(job, customer=customer, idempotent_key=idem, regions=regions, now_ms=now, **(links or {}))
    month = month_of()
    tier = await tier_of(redis, settings, customer)
    quota_left = tier.cap if tier.cap is not None and settings.partitions == 1 else -1
    held: str | None = None
    idem_key = keys.idempotency(partition, customer, digest)
    if tier.cap is not None and settings.partitions > 1 and not await redis.exists(idem_key):
        counter = keys.quota_reservations(customer, month)
        if not await quotas.hold(scripts.reserve_quota, counter, cap=tier.cap):
            return SubmitReply(Submitted.QUOTA_SPENT, "", "")
        held = counter
    submission = Submission(
        job_id=job_id, customer=customer, digest=digest, month=month, fields=fields,
        streams=regions, timers=timers_for(dict(job), now), due_ms=job.get("retry_at") or 0, now_ms=now,
        idempotency_ttl_s=settings.idempotency_ttl_s, usage_ttl_s=USAGE_TTL_S, quota_left=quota_left,
        queued_left=await queued_left(redis, settings, customer, partition),
        domain=domain, index_ttl_s=job_index.ttl_s(settings),
    )  # fmt: skip
    reply = await job_scripts.submit(scripts.submit, submission)
    if reply.submitted is not Submitted.CREATED and held is not None:
        await quotas.give_back(scripts.reserve_quota, held)
    return reply

"""Flow-control keys: a customer's own limit on top of the domain's (the job field ``flow_control``).

A job may carry ``{"key": str, "rate": float, "parallelism": int}`` (QStash's
semantics). Every job of one customer with the same key shares that limit,
in every region, in addition to its domain's: a send needs the domain's
grant *and* the key's leave (``scripts/flow_acquire.lua``: the key's pause,
its sends in flight, its rate). A job the key holds back is not sent: it
goes back to wait (a deferral, no attempt counted) for as long as the key
says, and its domain's token is given back, so a slow key costs other work
on the same domain nothing.

Keys are per customer: the same string from two customers names two keys.
A 429 with ``Retry-After`` on a job with a key pauses the key, not the
domain (unless ``domains.yaml`` says ``pause: domain``): one customer's
exhausted account at an API does not stop that API for everyone. Customers
pause and resume their own keys (``POST /api/v1/flow-control/{key}/pause``),
and see their state (``GET /api/v1/flow-control/{key}``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..common import keys, scripting
from ..common.redisconn import RedisClient

KEY_TTL_S = 86400  # an unused key is forgotten after a day (each send renews it)


@dataclass(frozen=True)
class FlowSpec:
    """A job's ``flow_control``, as validated."""

    key: str
    rate: float | None
    parallelism: int | None

    @classmethod
    def of(cls, spec: dict[str, Any]) -> FlowSpec | None:
        fc = spec.get("flow_control")
        if not fc:
            return None
        return cls(fc["key"], fc.get("rate"), fc.get("parallelism"))


class FlowControl:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._acquire = scripting.register(redis, "pacing/flow_acquire")
        self._resume = scripting.register(redis, "pacing/flow_resume")

    async def acquire(self, customer: str, flow: FlowSpec, lease: str, *, lease_ms: int, now_ms: float | None = None) -> int:
        """0: the send may go (it holds a place until released); else how long (ms) the key holds it back."""
        verdict, wait_ms = await self._acquire(
            keys=[keys.flow(customer, flow.key), keys.flow_running(customer, flow.key)],
            args=[
                "" if now_ms is None else repr(float(now_ms)),
                "" if flow.rate is None else repr(float(flow.rate)),
                "" if flow.parallelism is None else flow.parallelism,
                lease,
                lease_ms,
                flow.key,
                customer,
            ],
        )
        return 0 if verdict == "ok" else max(1, int(wait_ms))

    async def release(self, customer: str, key: str, lease: str) -> None:
        await self.redis.zrem(keys.flow_running(customer, key), lease)

    async def pause(self, customer: str, key: str, until_ms: int) -> None:
        """Pause the key until ``until_ms`` (a pause only ever extends)."""
        flow = keys.flow(customer, key)
        current = float(await self.redis.hget(flow, "pause_until") or 0)  # type: ignore[misc]  # redis-py#2399
        if until_ms > current:
            await self.redis.hset(flow, mapping={"pause_until": str(until_ms), "key": key, "customer": customer})  # type: ignore[misc]  # redis-py#2399
            await self.redis.expire(flow, KEY_TTL_S)

    async def deferred(self, customer: str, key: str, member: str, due_ms: int) -> None:
        """Remember a job the key held back (its delayed-set member), so that a resume can bring it forward."""
        deferred = keys.flow_deferred(customer, key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(deferred, {member: due_ms})
            pipe.zremrangebyscore(deferred, "-inf", time.time() * 1000 - KEY_TTL_S * 1000)
            pipe.expire(deferred, KEY_TTL_S)
            await pipe.execute()

    async def resume(self, customer: str, key: str) -> int:
        """End the key's pause; the jobs it held back are due at once. Returns how many were brought forward."""
        await self.redis.hdel(keys.flow(customer, key), "pause_until")  # type: ignore[misc]  # redis-py#2399
        now_ms = int(time.time() * 1000)
        members = await self.redis.zrangebyscore(keys.flow_deferred(customer, key), now_ms, "+inf")
        moved = 0
        for member in members:  # each in its own partition's delayed set (another slot): one at a time
            job_id = member.partition("|")[2]
            partition = keys.job_partition(job_id)
            if partition is not None:
                moved += int(await self._resume(keys=[keys.delayed(partition)], args=[now_ms, member]))
        await self.redis.delete(keys.flow_deferred(customer, key))
        return moved

    async def note_domain(self, customer: str, key: str, domain: str) -> None:
        """Remember that the key's jobs go to ``domain`` (the domain view lists the customer's keys there)."""
        used = keys.flow_keys_of(customer, domain)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(used, key)
            pipe.expire(used, KEY_TTL_S)
            await pipe.execute()

    async def keys_at(self, customer: str, domain: str) -> list[dict[str, Any]]:
        """The states of the customer's keys used at ``domain`` (forgotten keys left out), by key."""
        names = sorted(await self.redis.smembers(keys.flow_keys_of(customer, domain)))  # type: ignore[misc]  # redis-py#2399
        states = [await self.state(customer, name) for name in names[:100]]
        return [s for s in states if s is not None]

    async def state(self, customer: str, key: str) -> dict[str, Any] | None:
        """The key as its customer sees it; None when it was never used (or forgotten)."""
        now_ms = time.time() * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.flow(customer, key))
            pipe.zcount(keys.flow_running(customer, key), now_ms, "+inf")
            fields, running = await pipe.execute()
        if not fields:
            return None
        paused_until = float(fields.get("pause_until") or 0)
        return {
            "key": key,
            "rate": float(fields["rate"]) if fields.get("rate") else None,
            "parallelism": int(fields["parallelism"]) if fields.get("parallelism") else None,
            "in_flight": int(running),
            "paused": paused_until > now_ms,
            "paused_until_ms": int(paused_until) if paused_until > now_ms else None,
        }

"""Webhook delivery state: its layout, how to read it, dead letters and replay.

The delivery service writes this state (``delivery/worker.py``, through the
``delivery_*.lua`` scripts); the edge API shows it in ``GET /api/v1/jobs/{id}``
and serves the dead letters; ``ezthrottle-admin deliveries`` lists and
replays them. It lives here because services never import each other.

One hash per job, ``keys.job_webhooks(job_id)``, written when the job enters
delivery and kept as long as the job (``job_ttl_s``)::

    customer, payload (the exact JSON body every webhook gets), count,
    quorum, votes (voting webhooks delivered), quorum_met_ms,
    quorum_missed_ms (set once, when dead letters put the quorum out of reach),
    job_status, job_finished_ms, planned_ms
    <i>:url  <i>:vote (1/0)  <i>:regions (comma list)
    <i>:state        pending | retrying | delivered | dead
    <i>:attempts     POSTs made so far
    <i>:window_base  attempts made before the current window (set by a replay)
    <i>:since_ms     start of the current retry window (a replay restarts it, unless it replayed it within that window)
    <i>:replayed_ms  the replay that opened the current window (delivery_replay.lua)
    <i>:next_ms      when the next POST is due (pending, retrying)
    <i>:last_status  <i>:last_error  <i>:last_ms      the last POST
    <i>:delivered_ms <i>:sent_by (node) <i>:sent_region
    <i>:dead_reason  <i>:dead_ms                     (dead)
    <i>:edge         the edge node that sends the first attempt (edge/webhooks.py); a hand-off the
                     delivery service sweeps queues those of its webhooks still pending

A job with a dead webhook is in its partition's dead letters and in the
customer's (``keys.delivery_dead``), scored by the time it died.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from . import delivery_scripts, keys
from .redisconn import RedisClient, Scripts

PENDING = "pending"
RETRYING = "retrying"
DELIVERED = "delivered"
DEAD = "dead"

ANY_ROUTE = "any"

# Why a webhook was dead-lettered.
WINDOW_EXHAUSTED = "window_exhausted"
GONE = "gone"
BLOCKED = "outbound_blocked"

DEFAULT_WINDOW_S = 24 * 3600.0  # Settings.delivery_window_s's default


def _int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


def route_for(regions: Sequence[str], attempt: int, live: Iterable[str]) -> str:
    """Which delivery workers send attempt ``attempt`` (0-based) of a webhook.

    No ``regions``: any worker. With regions: the workers of one of them,
    rotating through those that have a live delivery worker, so a region
    that cannot reach the endpoint does not hold it back; with none alive,
    any worker.
    """
    if not regions:
        return ANY_ROUTE
    alive = set(live)
    candidates = [r for r in regions if r in alive]
    return candidates[attempt % len(candidates)] if candidates else ANY_ROUTE


async def live_regions(r: RedisClient, regions: Sequence[str]) -> set[str]:
    """Regions with at least one live delivery worker."""
    if not regions:
        return set()
    async with r.pipeline(transaction=False) as pipe:
        for region in regions:
            pipe.exists(keys.delivery_region_alive(region))
        found = await pipe.execute()
    return {region for region, n in zip(regions, found) if n}


def hook_view(data: dict[str, str], i: int) -> dict[str, Any]:
    p = f"{i}:"
    regions = [x for x in data.get(p + "regions", "").split(",") if x]
    return {
        "url": data.get(p + "url"),
        "has_quorum_vote": data.get(p + "vote") == "1",
        "regions": regions or None,
        "state": data.get(p + "state"),
        "attempts": int(data.get(p + "attempts") or 0),
        "last_status_code": _int(data.get(p + "last_status")),
        "last_error": data.get(p + "last_error") or None,
        "last_attempt_at_ms": _int(data.get(p + "last_ms")),
        "next_attempt_at_ms": _int(data.get(p + "next_ms")),
        "delivered_at_ms": _int(data.get(p + "delivered_ms")),
        "delivered_from": data.get(p + "sent_region") or None,
        "dead_reason": data.get(p + "dead_reason") or None,
        "dead_at_ms": _int(data.get(p + "dead_ms")),
    }


def webhooks_view(spec: dict[str, Any], data: dict[str, str]) -> dict[str, Any] | None:
    """The ``webhooks`` section of a job's view: None for a job without webhooks.

    Before the job is final (no delivery state yet) every webhook is pending.
    """
    hooks = spec.get("webhooks") or []
    if not hooks:
        return None
    if not data:
        return {
            "quorum": spec.get("webhook_quorum", 1),
            "votes": 0,
            "quorum_met": False,
            "quorum_met_at_ms": None,
            "endpoints": [
                {"url": h["url"], "has_quorum_vote": h["has_quorum_vote"], "regions": h.get("regions"), "state": PENDING, "attempts": 0}
                for h in hooks
            ],
        }
    met_at = _int(data.get("quorum_met_ms"))
    return {
        "quorum": int(data.get("quorum") or 1),
        "votes": int(data.get("votes") or 0),
        "quorum_met": met_at is not None,
        "quorum_met_at_ms": met_at,
        "endpoints": [hook_view(data, i) for i in range(int(data.get("count") or 0))],
    }


# -- dead letters ----------------------------------------------------------------


async def list_dead(r: RedisClient, partitions: int, *, customer: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, oldest first: one entry per job with its dead webhooks.

    Scoped to ``customer`` when given. Entries whose state has expired are
    dropped from the dead letters on the way.
    """
    out: list[dict[str, Any]] = []
    for p in range(partitions):
        if len(out) >= limit:
            break
        dead_key = keys.delivery_dead(p, customer)
        for job_id, score in await r.zrange(dead_key, 0, limit - len(out) - 1, withscores=True):
            data = await r.hgetall(keys.job_webhooks(job_id))  # type: ignore[misc]  # redis-py#2399
            if not data:
                await r.zrem(dead_key, job_id)
                continue
            hooks = [dict(hook_view(data, i), index=i) for i in range(int(data.get("count") or 0))]
            out.append(
                {
                    "job_id": job_id,
                    "customer": data.get("customer"),
                    "dead_at_ms": int(score),
                    "job_status": data.get("job_status"),
                    "webhooks": [h for h in hooks if h["state"] == DEAD],
                }
            )
    out.sort(key=lambda e: e["dead_at_ms"])
    return out


async def replay(
    r: RedisClient,
    scripts: Scripts,
    job_id: str,
    regions: Sequence[str],
    ttl_s: int,
    *,
    customer: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> int | None:
    """Queue a job's dead webhooks again, each with a fresh retry window (``window_s``).

    A webhook a replay already gave a window that is still open goes on in
    that one: replaying again does not restart it.

    Returns how many were queued (0 if none was dead), or None when the job
    has no delivery state, or belongs to another customer than ``customer``.
    """
    partition = keys.job_partition(job_id)
    if partition is None:
        return None
    hooks_key = keys.job_webhooks(job_id)
    data = await r.hgetall(hooks_key)  # type: ignore[misc]  # redis-py#2399
    if not data or (customer is not None and data.get("customer") != customer):
        return None
    live = await live_regions(r, regions)
    routes = [route_for([x for x in data.get(f"{i}:regions", "").split(",") if x], 0, live) for i in range(int(data.get("count") or 0))]
    now = int(time.time() * 1000)
    return await delivery_scripts.replay(
        scripts.delivery_replay, job_id, data["customer"], routes, now_ms=now, ttl_s=ttl_s, window_ms=int(window_s * 1000)
    )


async def replay_all(
    r: RedisClient, scripts: Scripts, partitions: int, regions: Sequence[str], ttl_s: int, *, customer: str | None = None
) -> tuple[int, int]:
    """Replay every dead letter (of ``customer`` if given): (jobs, webhooks) queued again."""
    jobs = hooks = 0
    for p in range(partitions):
        while True:
            batch = await r.zrange(keys.delivery_dead(p, customer), 0, 499)
            if not batch:
                break
            for job_id in batch:
                n = await replay(r, scripts, job_id, regions, ttl_s, customer=customer)
                if n is None:  # state gone: drop the stale dead letter
                    await r.zrem(keys.delivery_dead(p, customer), job_id)
                    await r.zrem(keys.delivery_dead(p), job_id)
                    continue
                jobs += 1
                hooks += n
    return jobs, hooks

"""Bulk actions: one action over many jobs, run in the background, whose progress any edge can read and whose runner can die.

Two kinds share this runner: ``cancel`` (the jobs a ``GET /api/v1/jobs``
filter matches, ``common/bulk_cancel.py``) and ``replay`` (dead letters,
``common/bulk_replay.py``). A kind is one function, a *step*: it does the next
page of the action from a cursor and answers what it counted and the cursor
to go on from (None: done). Every step's work is idempotent (a job cancelled
is final and matches no more; a job replayed leaves the dead letters), so a
page done twice, by a runner that died after it and the one that took over,
changes nothing twice.

In Redis (``common/keys.py``), nothing in one edge's memory:

- ``keys.bulk_action(customer, id)``: a hash, the action: ``kind``,
  ``params`` (JSON), ``state`` (running | done | failed), ``matched`` (what
  the call counted) and ``matched_exact`` (0: an estimate), ``seen`` (jobs the
  runner matched), one ``n:<counter>`` per counter of the kind, ``cursor``,
  ``created_ms``, ``updated_ms``, ``finished_ms``, ``error``, ``runs`` (how
  many runners took it) and ``failures``. Under the customer's name: another
  customer's id finds nothing (404). It expires :data:`RECORD_TTL_S` after its
  last change.
- ``keys.bulk_lease(customer, id)``: who runs it (``renew_lease.lua``, renewed
  before each step, ``bulk_lease_s``).
- ``keys.bulk_running(customer)``: its running actions, for the cap
  (``bulk_max_running_per_customer``; over it, 429 ``too_many_bulk_actions``).
- ``keys.bulk_orphans()``: every running action by its lease's expiry. Each
  edge sweeps it (:meth:`BulkRunner.sweep`) and takes over an action whose
  runner went silent; reading an action's progress does too.

A step that raises (a bug, not Redis being away) is tried again by the next
runner; the :data:`MAX_FAILURES`-th time the action ends ``failed`` with the
error's name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import keys, leases
from .config import Settings
from .errors import ApiError
from .loops import run_every
from .metrics import BULK_ACTIONS
from .redisconn import UNAVAILABLE, Scripts

if TYPE_CHECKING:
    from .redisconn import RedisClient

log = logging.getLogger(__name__)

RECORD_TTL_S = 7 * 24 * 3600
MAX_FAILURES = 3
STATES = ("running", "done", "failed")
_ID_CHARS = 24  # hex characters after the kind's prefix


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Action:
    action_id: str
    customer: str
    kind: str
    params: dict[str, Any]
    created_ms: int
    cursor: str = ""  # "" at the start


@dataclass
class StepResult:
    counts: dict[str, int]  # added to the action's counters
    seen: int  # jobs the step matched
    cursor: str | None  # where the next step starts; None: the action is done
    outcomes: dict[str, str] = field(default_factory=dict)  # each job's outcome, for an answer given in the call


Step = Callable[["RedisClient", Scripts, Settings, Action], Awaitable[StepResult]]


def kinds() -> dict[str, Step]:
    """Every kind of bulk action and its step."""
    from . import bulk_cancel, bulk_replay  # they build on this module

    return {bulk_cancel.KIND: bulk_cancel.step, bulk_replay.KIND: bulk_replay.step}


def valid_id(action_id: str, prefix: str) -> bool:
    rest = action_id.removeprefix(prefix)
    return action_id.startswith(prefix) and len(rest) == _ID_CHARS and all(c in "0123456789abcdef" for c in rest)


async def create(
    redis: RedisClient,
    settings: Settings,
    customer: str,
    kind: str,
    prefix: str,
    params: Mapping[str, Any],
    *,
    matched: int,
    matched_exact: bool,
    created_ms: int | None = None,
) -> Action:
    """Record a new running action, or 429 ``too_many_bulk_actions`` when the customer has its cap running."""
    action_id = prefix + secrets.token_hex(_ID_CHARS // 2)
    created = now_ms() if created_ms is None else created_ms
    fields = {
        "kind": kind, "customer": customer, "params": orjson.dumps(dict(params)), "state": "running", "matched": matched,
        "matched_exact": int(matched_exact), "seen": 0, "cursor": "", "created_ms": created, "updated_ms": created,
        "runs": 0, "failures": 0,
    }  # fmt: skip
    key = keys.bulk_action(customer, action_id)
    running = keys.bulk_running(customer)
    # The record first, then its place among the running: two calls racing each count the other (the cap errs low, never over).
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, RECORD_TTL_S)
        pipe.zadd(running, {action_id: created})
        pipe.expire(running, RECORD_TTL_S)
        pipe.zrange(running, 0, -1)
        *_, ids = await pipe.execute()
    cap = settings.bulk_max_running_per_customer
    others = [a for a in ids if a != action_id]
    if len(others) >= cap and await _running_count(redis, customer, others) >= cap:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(running, action_id)
            pipe.delete(key)
            await pipe.execute()
        BULK_ACTIONS.labels(kind, "refused").inc()
        raise ApiError(
            "too_many_bulk_actions",
            f"this API key's customer has {cap} bulk actions running (cancel by filter, dead-letter replay); "
            "wait for one to end (GET its progress)",
            headers={"Retry-After": "5"},
        )
    await redis.zadd(keys.bulk_orphans(), {f"{customer}|{action_id}": created + int(settings.bulk_lease_s * 1000)})
    BULK_ACTIONS.labels(kind, "started").inc()
    return Action(action_id, customer, kind, dict(params), created)


async def _running_count(redis: RedisClient, customer: str, ids: list[str]) -> int:
    """How many of ``ids`` still run; those whose record is gone or ended leave the customer's set."""
    async with redis.pipeline(transaction=False) as pipe:
        for action_id in ids:
            pipe.hget(keys.bulk_action(customer, action_id), "state")
        states = await pipe.execute()
    gone = [a for a, s in zip(ids, states) if s != "running"]
    if gone:
        await redis.zrem(keys.bulk_running(customer), *gone)
    return len(ids) - len(gone)


async def read(redis: RedisClient, customer: str, action_id: str) -> dict[str, str] | None:
    """An action's record (None: unknown, expired, or another customer's)."""
    data: dict[str, str] = await redis.hgetall(keys.bulk_action(customer, action_id))  # type: ignore[misc]  # redis-py#2399
    if not data or data.get("customer") != customer:
        return None
    return data


def counters(record: Mapping[str, str]) -> dict[str, int]:
    return {name[2:]: int(value) for name, value in record.items() if name.startswith("n:")}


def progress(record: Mapping[str, str]) -> dict[str, Any]:
    """What every view of an action shows (the kind's view adds its counters)."""
    state = record.get("state", "running")
    matched, seen = int(record.get("matched") or 0), int(record.get("seen") or 0)
    exact = record.get("matched_exact") == "1"
    finished = record.get("finished_ms")
    return {
        "state": state,
        "matched": matched if exact else max(matched, seen),
        "matched_exact": exact,
        "created_at_ms": int(record.get("created_ms") or 0),
        "updated_at_ms": int(record.get("updated_ms") or 0),
        "finished_at_ms": int(finished) if finished else None,
        "error": record.get("error") or None,
    }


def _action(action_id: str, record: Mapping[str, str]) -> Action:
    return Action(
        action_id, record["customer"], record["kind"], orjson.loads(record["params"]), int(record["created_ms"]), record.get("cursor") or ""
    )


class BulkRunner:
    """Runs bulk actions for one process (an edge, or the admin CLI), and takes over those whose runner went silent."""

    def __init__(self, redis: RedisClient, scripts: Scripts, settings: Settings, holder: str, steps: Mapping[str, Step] | None = None):
        self.redis = redis
        self.scripts = scripts
        self.settings = settings
        self.holder = f"{holder}:{secrets.token_hex(4)}"
        self._steps = dict(steps) if steps is not None else None  # None: kinds(), looked up at each run
        self.lease_ms = max(1, int(settings.bulk_lease_s * 1000))
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def steps(self) -> Mapping[str, Step]:
        return self._steps if self._steps is not None else kinds()

    async def _hold(self, action: Action) -> bool:
        """Take or keep the action's lease, and push its orphan deadline on; False: another runner has it."""
        lease = keys.bulk_lease(action.customer, action.action_id)
        held = await leases.renew(self.scripts.renew_lease, lease, holder=self.holder, ttl_ms=self.lease_ms)
        if held:
            await self.redis.zadd(keys.bulk_orphans(), {f"{action.customer}|{action.action_id}": now_ms() + self.lease_ms})
        return held

    async def run(self, action: Action) -> dict[str, str]:
        """Run the action to its end here (or until another runner holds it); its each job's outcome when it ran whole here."""
        step = self.steps[action.kind]
        key = keys.bulk_action(action.customer, action.action_id)
        outcomes: dict[str, str] = {}
        if not await self._hold(action):
            return outcomes
        await self.redis.hincrby(key, "runs", 1)  # type: ignore[misc]  # redis-py#2399
        ended = False
        try:
            while True:
                try:
                    result = await step(self.redis, self.scripts, self.settings, action)
                except UNAVAILABLE:
                    raise
                except Exception as exc:
                    ended = await self._failed(action, exc)
                    return outcomes
                outcomes.update(result.outcomes)
                now = now_ms()
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name, n in result.counts.items():
                        if n:
                            pipe.hincrby(key, f"n:{name}", n)
                    pipe.hincrby(key, "seen", result.seen)
                    pipe.hset(key, mapping={"cursor": result.cursor or "", "updated_ms": now})
                    pipe.expire(key, RECORD_TTL_S)
                    await pipe.execute()
                if result.cursor is None:
                    await self._done(action)
                    ended = True
                    return outcomes
                action.cursor = result.cursor
                if not await self._hold(action):
                    log.info("bulk action %s taken over by another runner", action.action_id)
                    return outcomes
        finally:
            await self._let_go(action, ended)

    async def _done(self, action: Action) -> None:
        key = keys.bulk_action(action.customer, action.action_id)
        now = now_ms()
        seen = int(await self.redis.hget(key, "seen") or 0)  # type: ignore[misc]  # redis-py#2399
        fields: dict[str, Any] = {"state": "done", "updated_ms": now, "finished_ms": now}
        if action.kind != "replay":  # a cancel's count is the runner's once it is done (a replay counted exactly at its call)
            fields |= {"matched": seen, "matched_exact": 1}
        await self.redis.hset(key, mapping=fields)  # type: ignore[misc]  # redis-py#2399
        await self._ended(action)
        BULK_ACTIONS.labels(action.kind, "done").inc()

    async def _failed(self, action: Action, exc: Exception) -> bool:
        key = keys.bulk_action(action.customer, action.action_id)
        failures = int(await self.redis.hincrby(key, "failures", 1))  # type: ignore[misc]  # redis-py#2399
        log.warning("bulk action %s: a step failed (%d of %d)", action.action_id, failures, MAX_FAILURES, exc_info=exc)
        if failures < MAX_FAILURES:
            return False  # the next sweep tries again
        now = now_ms()
        await self.redis.hset(key, mapping={"state": "failed", "error": type(exc).__name__, "updated_ms": now, "finished_ms": now})  # type: ignore[misc]
        await self._ended(action)
        BULK_ACTIONS.labels(action.kind, "failed").inc()
        return True

    async def _ended(self, action: Action) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.bulk_running(action.customer), action.action_id)
            pipe.zrem(keys.bulk_orphans(), f"{action.customer}|{action.action_id}")
            await pipe.execute()

    async def _let_go(self, action: Action, ended: bool) -> None:
        """Give the lease up; an action not ended is an orphan at once, for the next sweep anywhere to go on with."""
        try:
            released = await leases.release(
                self.scripts.release_lease, keys.bulk_lease(action.customer, action.action_id), holder=self.holder
            )
            if released and not ended:
                await self.redis.zadd(keys.bulk_orphans(), {f"{action.customer}|{action.action_id}": now_ms()}, xx=True)
        except UNAVAILABLE:  # it lapses on its own
            pass

    def start(self, action: Action) -> None:
        """Run the action in the background here (once per process)."""
        if action.action_id in self._tasks:
            return
        task = asyncio.create_task(self._background(action), name=f"bulk-{action.action_id}")
        self._tasks[action.action_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(action.action_id, None))

    async def _background(self, action: Action) -> None:
        try:
            await self.run(action)
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis away: the lease lapses, and a sweep (here or elsewhere) goes on from the cursor
            log.warning("bulk action %s stopped; it is resumed once its lease lapses", action.action_id, exc_info=True)

    async def current(self, customer: str, action_id: str, *, kind: str, prefix: str, what: str) -> dict[str, str]:
        """The customer's action ``action_id`` of ``kind`` as it stands, for its progress view; one whose runner
        went silent goes on here. A 404 (``no <what> ...``) when the customer has no such action."""
        record = await read(self.redis, customer, action_id) if valid_id(action_id, prefix) else None
        if record is None or record.get("kind") != kind:
            raise ApiError("not_found", f"no {what} {action_id!r} for this API key")
        if record.get("state") == "running":
            await self.resume(customer, action_id, record)
        return record

    async def resume(self, customer: str, action_id: str, record: Mapping[str, str] | None = None) -> bool:
        """Take over an action whose runner went silent (its lease lapsed); True when it now runs here."""
        record = record if record is not None else await read(self.redis, customer, action_id)
        if record is None or record.get("state") != "running" or action_id in self._tasks:
            return False
        if await self.redis.exists(keys.bulk_lease(customer, action_id)):
            return False
        action = _action(action_id, record)
        if action.kind not in self.steps:
            return False
        BULK_ACTIONS.labels(action.kind, "resumed").inc()
        self.start(action)
        return True

    async def sweep(self, limit: int = 20) -> int:
        """Take over the running actions whose lease lapsed; how many now run here."""
        due = await self.redis.zrangebyscore(keys.bulk_orphans(), "-inf", now_ms(), start=0, num=limit)
        taken = 0
        for member in due:
            customer, _, action_id = member.rpartition("|")
            record = await read(self.redis, customer, action_id)
            if record is None or record.get("state") != "running":
                await self.redis.zrem(keys.bulk_orphans(), member)  # ended, or expired
                continue
            taken += await self.resume(customer, action_id, record)
        return taken

    async def sweep_forever(self) -> None:
        await run_every(self.lease_ms / 2000.0, self.sweep, log=log, failed="bulk actions: sweep failed")

    async def stop(self) -> None:
        """Stop the actions running here; each lets its lease go, so another edge takes it over at its next sweep."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

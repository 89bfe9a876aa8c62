"""The edge's job loop: read the region's streams, attempt, record, acknowledge.

Each region has one job stream per partition, read through the consumer group
``edge-<region>``. An entry stays pending (in the group's PEL) until the
outcome is stored by a Lua script that also acknowledges it, so a node killed
mid-attempt loses nothing: after the visibility timeout another live node of
the region claims the entry (XAUTOCLAIM) and runs it again.

A live node keeps what it holds: every third of the visibility timeout it
re-claims its own pending entries, which resets their idle time, so however
long an attempt waits nobody steals it while its node is alive.

Concurrency is bounded: the loop reads only as many entries as it has free
attempt slots (``executor_concurrency``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..common import keys
from ..common.config import Settings
from ..common.metrics import ATTEMPT_LATENCY, ATTEMPTS, INFLIGHT, JOBS_FINISHED, RECLAIMED, ROUTING_LATENCY
from ..common.redisconn import Scripts
from .executor import Executor, Outcome
from .retry import FAILED, REROUTE, RETRY, SUCCESS, Decision, decide

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status_class(outcome: Outcome) -> str:
    if outcome.status_code is None:
        return outcome.error_kind or "error"
    return f"{outcome.status_code // 100}xx"


class RegionWorker:
    def __init__(self, settings: Settings, redis: aioredis.Redis, scripts: Scripts, executor: Executor) -> None:
        assert settings.region is not None
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.executor = executor
        self.region = settings.region
        self.group = keys.edge_group(self.region)
        self.consumer = settings.node_id
        self.streams = [keys.region_stream(p, self.region) for p in range(settings.partitions)]
        self._capacity = settings.executor_concurrency
        self._inflight = 0
        self._slot_freed = asyncio.Event()
        self._held: dict[tuple[str, str], str] = {}  # (stream, entry id) -> job id
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def start(self) -> None:
        await self.ensure_groups()
        for stream in self.streams:
            self._loops.append(asyncio.create_task(self._read_loop(stream), name=f"read:{stream}"))
        self._loops.append(asyncio.create_task(self._keep_and_reclaim_loop(), name="reclaim"))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop reading, let in-flight attempts finish for ``grace_s``, then cancel.

        Safe to call twice. A cancelled attempt's entry stays pending and is
        reclaimed by a live node of the region after the visibility timeout.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- reading -----------------------------------------------------------

    async def _wait_for_slot(self) -> int:
        while self._inflight >= self._capacity:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return self._capacity - self._inflight

    async def _read_loop(self, stream: str) -> None:
        while not self._stopping.is_set():
            try:
                free = await self._wait_for_slot()
                reply = await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: ">"}, count=min(free, self.settings.read_batch), block=1000
                )
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        self._spawn(stream, entry_id, fields)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us: recreate
                    await self.ensure_groups()
                    continue
                log.exception("reading %s failed", stream)
                await asyncio.sleep(0.5)
            except (ConnectionError, OSError, aioredis.ConnectionError, aioredis.TimeoutError):
                log.warning("redis unavailable while reading %s; retrying", stream, exc_info=True)
                await asyncio.sleep(0.5)

    def _spawn(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("job", "")
        self._held[(stream, entry_id)] = job_id
        self._inflight += 1
        INFLIGHT.labels(self.region).inc()
        task = asyncio.create_task(self._run_entry(stream, entry_id, job_id, time.perf_counter()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_entry(self, stream: str, entry_id: str, job_id: str, read_at: float) -> None:
        try:
            await self._attempt(stream, entry_id, job_id, read_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The entry stays pending; the reclaim loop retries it after the
            # visibility timeout rather than dropping it.
            log.exception("attempt crashed", extra={"job_id": job_id, "region": self.region})
        finally:
            self._held.pop((stream, entry_id), None)
            self._inflight -= 1
            INFLIGHT.labels(self.region).dec()
            self._slot_freed.set()

    async def _keep_and_reclaim_loop(self) -> None:
        interval = max(self.settings.visibility_timeout_ms / 3000.0, 0.1)
        while not self._stopping.is_set():
            try:
                await asyncio.sleep(interval)
                await self._keep_held()
                await self._reclaim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reclaim pass failed", exc_info=True)

    async def _keep_held(self) -> None:
        """Reset the idle time of every entry this node still works on."""
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in list(self._held):
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            await self.redis.xclaim(stream, self.group, self.consumer, min_idle_time=0, message_ids=ids, justid=True)

    async def _reclaim(self) -> None:
        """Take over entries idle past the visibility timeout (their node died)."""
        for stream in self.streams:
            if self._inflight >= self._capacity:
                return
            start = "0-0"
            while True:
                free = self._capacity - self._inflight
                if free <= 0:
                    return
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, self.settings.visibility_timeout_ms, start_id=start, count=min(free, 100)
                )
                start, claimed = reply[0], reply[1]
                for entry_id, fields in claimed:
                    if (stream, entry_id) in self._held:
                        continue
                    if fields is None:  # deleted entry still in the PEL: drop it
                        await self.redis.xack(stream, self.group, entry_id)
                        continue
                    RECLAIMED.labels(self.region).inc()
                    log.info("reclaimed entry %s", entry_id, extra={"job_id": fields.get("job"), "region": self.region})
                    self._spawn(stream, entry_id, fields)
                if start == "0-0":
                    break

    # -- one attempt -------------------------------------------------------

    async def _attempt(self, stream: str, entry_id: str, job_id: str, read_at: float) -> None:
        job_key = keys.job(job_id) if keys.job_partition(job_id) is not None else None
        if job_key is None:
            log.error("malformed stream entry %s on %s; dropping", entry_id, stream)
            await self.redis.xack(stream, self.group, entry_id)
            return
        state = await self.scripts.start_attempt(keys=[job_key], args=[_now_ms()])
        if not state or state[0] in ("success", "failed"):
            # Gone, or another region already won: nothing to send.
            await self._ack(stream, entry_id)
            return
        _state, spec_json, retries, reroutes, _created = state
        spec: dict[str, Any] = orjson.loads(spec_json)
        ROUTING_LATENCY.labels(self.region).observe(time.perf_counter() - read_at)

        started_ms = _now_ms()
        outcome = await self.executor.send(spec["method"], spec["url"], spec["headers"], spec["body"])
        ATTEMPTS.labels(self.region, _status_class(outcome)).inc()
        ATTEMPT_LATENCY.labels(self.region).observe(outcome.latency_ms / 1000.0)

        decision = decide(
            outcome,
            spec["retry_policy"],
            int(retries or 0),
            int(reroutes or 0),
            base_s=self.settings.retry_backoff_base_s,
            cap_s=self.settings.retry_backoff_cap_s,
        )
        attempt = {
            "region": self.region,
            "node": self.consumer,
            "started_ms": started_ms,
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
            "decision": decision.action,
        }
        if decision.action in (SUCCESS, FAILED):
            await self._finish(stream, entry_id, job_id, job_key, outcome, decision, attempt)
        else:
            await self._requeue(stream, entry_id, job_id, job_key, spec, decision, attempt)

    async def _ack(self, stream: str, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, self.group, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _finish(
        self, stream: str, entry_id: str, job_id: str, job_key: str, outcome: Outcome, decision: Decision, attempt: dict[str, Any]
    ) -> None:
        partition = keys.job_partition(job_id) or 0
        result = outcome.result() if outcome.status_code is not None else None
        won = await asyncio.shield(
            self.scripts.finish(
                keys=[job_key, keys.attempts(job_id), stream, keys.deliveries(partition)],
                args=[
                    self.group,
                    entry_id,
                    decision.action,
                    orjson.dumps(result),
                    self.region,
                    _now_ms(),
                    orjson.dumps(attempt),
                    self.settings.job_ttl_s,
                    job_id,
                    decision.reason,
                ],
            )
        )
        if won == 1:
            JOBS_FINISHED.labels(self.region, decision.action, decision.reason or "ok").inc()
        log.info(
            "job %s %s",
            "finished" if won == 1 else "result lost to another region",
            decision.action,
            extra={"job_id": job_id, "region": self.region, "status_code": outcome.status_code, "reason": decision.reason or None},
        )

    async def _requeue(
        self, stream: str, entry_id: str, job_id: str, job_key: str, spec: dict[str, Any], decision: Decision, attempt: dict[str, Any]
    ) -> None:
        partition = keys.job_partition(job_id) or 0
        if decision.action == RETRY:
            next_region, counter = self.region, "retries"
        else:
            next_region, counter = self._reroute_target(spec), "reroutes"
        now = _now_ms()
        due = now + int(decision.delay_s * 1000)
        attempt["next_region"] = next_region
        await asyncio.shield(
            self.scripts.requeue(
                keys=[job_key, keys.attempts(job_id), stream, keys.delayed(partition), keys.region_stream(partition, next_region)],
                args=[self.group, entry_id, orjson.dumps(attempt), counter, next_region, due, now, job_id],
            )
        )
        log.info(
            "job %s: %s to %s in %.0f ms",
            job_id,
            decision.action,
            next_region,
            decision.delay_s * 1000,
            extra={"job_id": job_id, "region": self.region, "reason": decision.reason},
        )

    def _reroute_target(self, spec: dict[str, Any]) -> str:
        """Another configured region, preferring the job's own list; this one if alone.

        Region health and preference order come with the multi-region work.
        """
        candidates = [r for r in (spec.get("regions") or self.settings.region_ids) if r != self.region]
        if not candidates:
            candidates = [r for r in self.settings.region_ids if r != self.region]
        if not candidates:
            return self.region
        # Spread reroutes deterministically per node so two nodes don't pile on one region.
        return candidates[(os.getpid() + int(time.time())) % len(candidates)]

"""At-least-once consumption of Redis Streams through a consumer group.

Every reader of a stream of work (edges reading jobs, delivery workers
reading webhooks, the coordinator reading workflow events) follows the same
rules, kept here once:

- the group is created with the stream (``MKSTREAM``), from the start, and
  creating it again is harmless;
- an entry read is *held* by its consumer until it is acknowledged and
  deleted (``XACK`` + ``XDEL``); while the consumer lives it resets the
  entries' idle time (``XCLAIM … JUSTID``) every third of the visibility
  timeout, so nobody takes them however long the work takes;
- a consumer that died leaves its entries pending: after the visibility
  timeout any live consumer of the group claims them (``XAUTOCLAIM``) and
  does the work again. An entry deleted while still pending is acknowledged
  and dropped (on Redis 6.2 too, which hands it over as a nil).

:class:`GroupConsumer` keeps those rules. :class:`StreamWorker` is the
lifecycle of a long-running reader built on it (read loops that survive
Redis going away, the keep-and-reclaim loop, work in flight, a graceful
stop); a service's worker subclasses it and writes only what its entries
mean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from .redisconn import UNAVAILABLE

if TYPE_CHECKING:
    from redis.typing import StreamIdT

    from .redisconn import RedisClient

Entry = tuple[str, dict[str, str]]  # (entry id, fields)


class GroupConsumer:
    """One consumer of one group, over any number of streams."""

    def __init__(self, redis: RedisClient, group: str, consumer: str, visibility_timeout_ms: int) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.visibility_timeout_ms = visibility_timeout_ms
        self.held: dict[tuple[str, str], str] = {}  # (stream, entry id) -> job id, until acknowledged

    @property
    def keep_interval_s(self) -> float:
        """How often held entries' idle time must be reset (a third of the visibility timeout)."""
        return self.visibility_timeout_ms / 3000.0

    async def ensure_groups(self, streams: Iterable[str]) -> None:
        for stream in streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def hold(self, stream: str, entry_id: str, job_id: str) -> None:
        self.held[(stream, entry_id)] = job_id

    def drop(self, stream: str, entry_id: str) -> None:
        self.held.pop((stream, entry_id), None)

    async def keep_held(self) -> None:
        """Reset the idle time of every entry held, so no other consumer reclaims it."""
        by_stream: dict[str, list[StreamIdT]] = {}
        for stream, entry_id in list(self.held):
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            await self.redis.xclaim(stream, self.group, self.consumer, min_idle_time=0, message_ids=ids, justid=True)

    async def reclaim(self, stream: str, *, count: Callable[[], int] = lambda: 100, pages: int = 100) -> AsyncIterator[list[Entry]]:
        """Pages of entries idle past the visibility timeout, now this consumer's.

        ``count`` says how many to take in the next page (0: stop, e.g. no
        free capacity). Entries this consumer holds are skipped; deleted
        ones still pending are acknowledged and dropped.
        """
        start = "0-0"
        for _page in range(pages):
            n = count()
            if n <= 0:
                return
            reply = await self.redis.xautoclaim(stream, self.group, self.consumer, self.visibility_timeout_ms, start_id=start, count=n)
            page_start, start, claimed = start, reply[0], reply[1]
            live: list[Entry] = []
            deleted = False
            for entry_id, fields in claimed:
                if entry_id is None or fields is None:
                    deleted = True
                elif (stream, entry_id) not in self.held:
                    live.append((entry_id, fields))
            if deleted:
                await self._ack_deleted(stream, page_start, start, {e for e, _f in claimed if e is not None})
            if live:
                yield live
            if start == "0-0":
                return

    async def _ack_deleted(self, stream: str, first: str, after: str, returned: set[str]) -> None:
        """Acknowledge the entries of a claimed page that no longer exist.

        Redis 7 drops a deleted entry from the pending list when it is
        claimed; Redis 6.2 hands it over as a nil without its id and keeps it
        pending forever. Its id is found among this consumer's pending
        entries of the page's range, and only an id ``XRANGE`` no longer finds
        is acknowledged (an entry just read by this consumer is left alone).
        """
        last = "+" if after == "0-0" else f"({after}"
        rows = await self.redis.xpending_range(stream, self.group, first, last, 1000, consumername=self.consumer)
        for row in rows:
            entry_id = row["message_id"]
            if entry_id in returned or (stream, entry_id) in self.held:
                continue
            if not await self.redis.xrange(stream, entry_id, entry_id):
                await self.redis.xack(stream, self.group, entry_id)

    async def ack(self, stream: str, *entry_ids: str) -> None:
        """Acknowledge and delete entries: the work they stood for is done or handed on."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, self.group, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            await pipe.execute()


class StreamWorker:
    """The lifecycle every reader of a stream of work shares (edge jobs, webhook deliveries).

    A subclass says which streams it reads (:meth:`group_streams`), what a
    read turn does (a coroutine given to :meth:`read_forever`), what to do
    with a dead consumer's entries (:meth:`reclaim_stale`), and writes its
    own ``start()`` from these parts::

        async def start(self) -> None:
            await self.ensure_groups()
            for stream in self.streams:
                self.add_loop(self.read_forever(partial(self._read_turn, stream), what=stream), name=f"read:{stream}")
            self.add_loop(self.keep_and_reclaim(), name="reclaim")

    Work an entry starts goes through :meth:`run_in_flight`, so :meth:`stop`
    can wait for it. Stopping: stop taking work (:meth:`_stop_taking_work`,
    by default cancel the loops), let work in flight finish for a grace
    period, cancel what is left, then :meth:`_after_stop`. Safe to call
    twice. A cancelled entry stays pending and is reclaimed by a live
    consumer after the visibility timeout.
    """

    #: The keep-and-reclaim loop runs every third of the visibility timeout, never more often than this.
    min_keep_interval_s: float = 0.05

    def __init__(self, redis: RedisClient, group: str, consumer: str, visibility_timeout_ms: int) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.reader = GroupConsumer(redis, group, consumer, visibility_timeout_ms)  # entries held until acknowledged
        self.log = logging.getLogger(type(self).__module__)  # the service's logger, not this module's
        self._tasks: set[asyncio.Task[None]] = set()  # work in flight, waited for by stop()
        self._loops: list[asyncio.Task[None]] = []  # cancelled first by stop()
        self._stopping = asyncio.Event()

    # -- what a subclass says ------------------------------------------------

    def group_streams(self) -> Iterable[str]:
        """Every stream whose group this worker needs (created, or recreated after a NOGROUP)."""
        raise NotImplementedError

    async def reclaim_stale(self) -> None:
        """Take over entries idle past the visibility timeout (``self.reader.reclaim``) and start their work."""
        raise NotImplementedError

    async def _stop_taking_work(self) -> None:
        """First step of :meth:`stop`: no new work after it. By default, cancel the loops."""
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _after_stop(self) -> None:
        """Last step of :meth:`stop`, once no work is in flight (e.g. give back a liveness lease)."""

    # -- the parts -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def ensure_groups(self) -> None:
        await self.reader.ensure_groups(self.group_streams())

    def add_loop(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run one of the worker's loops until :meth:`stop`."""
        task = asyncio.create_task(coro, name=name)
        self._loops.append(task)
        return task

    def run_in_flight(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run one piece of work; :meth:`stop` lets it finish for its grace period."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def read(self, streams: Iterable[str], count: int, block_ms: int = 1000) -> list[tuple[str, list[Entry]]]:
        """New entries of ``streams`` for this consumer (XREADGROUP ``>``), waiting up to ``block_ms``."""
        reply = await self.redis.xreadgroup(self.group, self.consumer, {s: ">" for s in streams}, count=count, block=block_ms)
        return list(reply or ())

    async def read_forever(self, turn: Callable[[], Awaitable[None]], *, what: str) -> None:
        """Run read turns until :meth:`stop`; ``what`` names the streams in logs.

        A stream deleted under the reader (NOGROUP) gets its group again;
        another Redis error, or Redis unavailable (also a cluster failing
        over), pauses reading half a second.
        """
        while not self._stopping.is_set():
            try:
                await turn()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # a stream was deleted under us: recreate
                    await self.ensure_groups()
                    continue
                self.log.exception("reading %s failed", what)
                await asyncio.sleep(0.5)
            except UNAVAILABLE:
                self.log.warning("redis unavailable while reading %s; retrying", what, exc_info=True)
                await asyncio.sleep(0.5)

    async def keep_and_reclaim(self) -> None:
        """Every third of the visibility timeout: keep what this consumer holds, take over what the dead held."""
        interval = max(self.reader.keep_interval_s, self.min_keep_interval_s)
        while not self._stopping.is_set():
            try:
                await asyncio.sleep(interval)
                await self.reader.keep_held()
                await self.reclaim_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.warning("reclaim pass failed", exc_info=True)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking work, let work in flight finish for ``grace_s``, then cancel it. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        await self._stop_taking_work()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._after_stop()

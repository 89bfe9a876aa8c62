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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Entry = tuple[str, dict[str, str]]  # (entry id, fields)


class GroupConsumer:
    """One consumer of one group, over any number of streams."""

    def __init__(self, redis: aioredis.Redis, group: str, consumer: str, visibility_timeout_ms: int) -> None:
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
        by_stream: dict[str, list[str]] = {}
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

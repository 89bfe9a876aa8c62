"""StreamWorker: the lifecycle every stream reader shares (stop with a grace, safe twice; a stream deleted under it)."""

import asyncio
import time

import pytest

from ezthrottle_server.common.streams import StreamWorker

pytestmark = pytest.mark.asyncio
VISIBILITY_MS = 300


class Worker(StreamWorker):
    """Each entry names a job and how long its work takes."""

    min_keep_interval_s = 0.01

    def __init__(self, redis, stream):
        super().__init__(redis, "g", "w", VISIBILITY_MS)
        self.stream = stream
        self.started: list[str] = []
        self.done: list[str] = []
        self.after_stops = 0

    def group_streams(self):
        return [self.stream]

    async def start(self):
        await self.ensure_groups()
        self.add_loop(self.read_forever(self._turn, what=self.stream), name="read")
        self.add_loop(self.keep_and_reclaim(), name="reclaim")

    async def _turn(self):
        for stream, entries in await self.read([self.stream], 10, block_ms=50):
            for entry_id, fields in entries:
                self.reader.hold(stream, entry_id, fields["job"])
                self.run_in_flight(self._work(stream, entry_id, fields["job"], float(fields["work_s"])))

    async def _work(self, stream, entry_id, job, work_s):
        self.started.append(job)
        try:
            await asyncio.sleep(work_s)
            await self.reader.ack(stream, entry_id)
            self.done.append(job)
        finally:
            self.reader.drop(stream, entry_id)

    async def reclaim_stale(self):
        async for entries in self.reader.reclaim(self.stream):
            for entry_id, fields in entries:
                self.reader.hold(self.stream, entry_id, fields["job"])
                self.run_in_flight(self._work(self.stream, entry_id, fields["job"], float(fields["work_s"])))

    async def _after_stop(self):
        self.after_stops += 1


async def until(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_stop_lets_work_finish_for_its_grace_then_cancels_and_is_safe_twice(redis):
    worker = Worker(redis, "test:stream-worker:stop")
    await worker.start()
    await redis.xadd(worker.stream, {"job": "quick", "work_s": "1"})
    await redis.xadd(worker.stream, {"job": "slow", "work_s": "60"})
    await until(lambda: len(worker.started) == 2)
    assert worker.done == []

    started = time.monotonic()
    await asyncio.gather(worker.stop(grace_s=3.0), worker.stop(grace_s=3.0))  # the second returns at once
    assert 3.0 <= time.monotonic() - started < 10  # the grace was waited out for the slow one
    assert worker.done == ["quick"]  # in flight when stop began, finished within the grace; the slow one was cancelled
    assert worker.after_stops == 1
    assert worker.stopping and all(t.done() for t in worker._loops) and not worker._tasks
    pending = await redis.xpending(worker.stream, "g")
    assert pending["pending"] == 1  # the cancelled entry stays pending, for a live consumer to reclaim

    await worker.stop()  # after the fact: nothing happens
    assert worker.after_stops == 1


async def test_a_stream_deleted_under_the_reader_gets_its_group_again(redis):
    worker = Worker(redis, "test:stream-worker:nogroup")
    await worker.start()
    try:
        await redis.xadd(worker.stream, {"job": "a", "work_s": "0"})
        await until(lambda: worker.done == ["a"])
        await redis.delete(worker.stream)  # the group goes with it: the next read says NOGROUP
        await redis.xadd(worker.stream, {"job": "b", "work_s": "0"})
        await until(lambda: worker.done == ["a", "b"])
    finally:
        await worker.stop()

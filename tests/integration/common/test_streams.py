"""GroupConsumer: entries held by a live consumer stay its own; a dead one's are taken over."""

import asyncio

import pytest

from ezthrottle_server.common.streams import GroupConsumer

pytestmark = pytest.mark.asyncio
VISIBILITY_MS = 300


async def reclaimed(consumer, stream, **kw):
    return [entry for page in [p async for p in consumer.reclaim(stream, **kw)] for entry in page]


async def test_held_entries_are_kept_and_a_dead_consumers_are_taken_over(redis):
    stream = "test:streams:jobs"
    alive = GroupConsumer(redis, "g", "alive", VISIBILITY_MS)
    other = GroupConsumer(redis, "g", "other", VISIBILITY_MS)
    await alive.ensure_groups([stream])
    await other.ensure_groups([stream])  # again: harmless
    ids = [await redis.xadd(stream, {"job": f"j{i}"}) for i in range(3)]
    [(_s, read)] = await redis.xreadgroup("g", "alive", {stream: ">"}, count=3)
    assert [e for e, _f in read] == ids
    for entry_id, fields in read[:2]:
        alive.hold(stream, entry_id, fields["job"])  # the third was read by a consumer that then died

    for _ in range(3):  # well past the visibility timeout, kept by its holder
        await asyncio.sleep(alive.keep_interval_s)
        await alive.keep_held()
    assert await reclaimed(other, stream) == [(ids[2], {"job": "j2"})]
    other.hold(stream, ids[2], "j2")  # working on it now

    await redis.xdel(stream, ids[1])  # deleted while still pending
    alive.drop(stream, ids[0])
    alive.drop(stream, ids[1])
    await asyncio.sleep(VISIBILITY_MS / 1000 + 0.1)
    assert await reclaimed(other, stream) == [(ids[0], {"job": "j0"})]  # the deleted one is acknowledged, not handed out
    pending = await redis.xpending(stream, "g")
    assert pending["pending"] == 2 and {c["name"] for c in pending["consumers"]} == {"other"}

    await other.ack(stream, ids[0], ids[2])
    assert await redis.xpending(stream, "g") == {"pending": 0, "min": None, "max": None, "consumers": []}
    assert await redis.xlen(stream) == 0


async def test_reclaim_takes_no_more_than_the_consumer_has_room_for(redis):
    stream = "test:streams:room"
    dead = GroupConsumer(redis, "g", "dead", 0)
    await dead.ensure_groups([stream])
    for i in range(5):
        await redis.xadd(stream, {"job": f"j{i}"})
    await redis.xreadgroup("g", "dead", {stream: ">"}, count=5)
    live = GroupConsumer(redis, "g", "live", 0)
    room = [2]

    def count():
        return room[0]

    pages = []
    async for page in live.reclaim(stream, count=count):
        pages.append(len(page))
        room[0] = 0  # full after the first page
    assert pages == [2]

"""Batcher: concurrent callers' Redis calls in one pipeline, each caller its own reply."""

import asyncio

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ezthrottle_server.common.batching import Batcher

pytestmark = pytest.mark.asyncio

ECHO = "redis.call('RPUSH', KEYS[1], ARGV[1]); return ARGV[1]"
FAIL = "return redis.error_reply('nope ' .. ARGV[1])"


@pytest_asyncio.fixture
async def one_connection(redis_url):
    """A client whose pool holds one connection and refuses a second: calls made
    at once succeed only if they share one round trip."""
    client = aioredis.Redis.from_pool(aioredis.ConnectionPool.from_url(redis_url, decode_responses=True, max_connections=1))
    await client.flushdb()
    yield client
    await client.aclose()


async def test_concurrent_calls_share_one_round_trip_and_get_their_own_replies(one_connection):
    batch = Batcher(one_connection)
    echo = one_connection.register_script(ECHO)
    await one_connection.script_load(ECHO)
    replies = await asyncio.gather(*(batch.script(echo, keys=["ezt-test:log"], args=[f"m{i}"]) for i in range(50)))
    assert replies == [f"m{i}" for i in range(50)]
    assert await one_connection.lrange("ezt-test:log", 0, -1) == [f"m{i}" for i in range(50)]  # in call order


async def test_an_error_goes_to_its_caller_only(one_connection):
    batch = Batcher(one_connection)
    fail = one_connection.register_script(FAIL)
    await one_connection.script_load(FAIL)
    ok, bad, hm = await asyncio.gather(
        batch.execute("SET", "ezt-test:k", "v"),
        batch.script(fail, args=["x"]),
        batch.execute("HMGET", "ezt-test:none", "a", "b"),
        return_exceptions=True,
    )
    assert ok is True and hm == [None, None]
    assert isinstance(bad, ResponseError) and "nope x" in str(bad)


async def test_a_script_the_server_lost_is_loaded_again(redis):
    batch = Batcher(redis)
    echo = redis.register_script(ECHO)
    await redis.script_flush()
    assert await asyncio.gather(*(batch.script(echo, keys=["ezt-test:log"], args=[i]) for i in range(3))) == ["0", "1", "2"]


async def test_batches_are_bounded(redis):
    batch = Batcher(redis, max_batch=10)
    replies = await asyncio.gather(*(batch.execute("INCR", "ezt-test:n") for _ in range(35)))
    assert sorted(replies) == list(range(1, 36))

"""The batcher's own connection (``wire.Wire``) on uvloop's loop, the one the services run on: it takes over
uvloop's transport as it does asyncio's (test_batching.py has the rest, on asyncio's loop)."""

import asyncio

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ezthrottle_server.common.batching import Batcher
from ezthrottle_server.common.redisconn import connect

ECHO = "redis.call('RPUSH', KEYS[1], ARGV[1]); return ARGV[1]"
BUSY = (
    "local t = redis.call('TIME'); local t0 = t[1] * 1000 + t[2] / 1000;"
    " repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 - t0 >= tonumber(ARGV[1]); return 1"
)


async def _until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def _scenario(url: str) -> None:
    client = connect(url)
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await client.flushdb()
        batch = Batcher(client, max_batch=30)
        assert batch._wire is not None
        echo = client.register_script(ECHO)
        await client.hset("ezt-test:h", mapping={"a": "1"})
        await client.set("ezt-test:str", "x")
        replies = await asyncio.gather(
            batch.execute("HGETALL", "ezt-test:h"),
            batch.execute("INCR", "ezt-test:str"),
            batch.script(echo, ["ezt-test:log"], ["lost"]),  # NOSCRIPT: never loaded
            *(batch.execute("INCR", "ezt-test:n") for _ in range(300)),
            return_exceptions=True,
        )
        assert replies[0] == {"a": "1"} and isinstance(replies[1], ResponseError) and replies[2] == "lost"
        assert replies[3:] == list(range(1, 301))

        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await _until(lambda: batch._wire is not None and batch._wire._transport is None)
        assert await batch.execute("INCR", "ezt-test:n") == 301  # a new connection

        busy = client.register_script(BUSY)
        await client.script_load(BUSY)
        in_flight = [batch.script(busy, args=[300]), batch.execute("INCR", "ezt-test:n")]
        await _until(lambda: batch._wire is not None and len(batch._wire._sent) == 2)
        async with asyncio.timeout(5):
            await client.aclose()  # returns: the wire hands the transport's end to redis-py's streams
            failed = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(f, RedisConnectionError) for f in failed), failed
    finally:
        await client.aclose()
        await admin.aclose()


def test_the_wire_on_uvloop(redis_url):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_scenario(redis_url))

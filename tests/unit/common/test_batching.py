"""Batcher: concurrent callers' Redis calls in one round trip, each caller its own reply.

Two paths: redis-py's pipeline (a cluster, TLS, any client but ``connect()``'s
on one server: here a plain ``redis.asyncio.Redis``) and the batcher's own
connection (``wire.Wire``) on one plain server. What a caller sees is tested on
both; how the connection lives (killed, restarted, stopped, closed, given
back) on the wire; on uvloop's loop (the services') in test_batching_uvloop.py.
"""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ezthrottle_server.common import wire
from ezthrottle_server.common.batching import Batcher
from ezthrottle_server.common.redisconn import UNAVAILABLE, connect, is_cluster_url
from support.redis_server import free_port, redis_binary

pytestmark = pytest.mark.asyncio

ECHO = "redis.call('RPUSH', KEYS[1], ARGV[1]); return ARGV[1]"
FAIL = "return redis.error_reply('nope ' .. ARGV[1])"
TABLE = "return {ARGV[1], tonumber(ARGV[2]), {KEYS[1]}}"
# Holds the server for ARGV[1] ms: calls sent after it are in flight meanwhile.
BUSY = (
    "local t = redis.call('TIME'); local t0 = t[1] * 1000 + t[2] / 1000;"
    " repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 - t0 >= tonumber(ARGV[1]); return 1"
)


@pytest_asyncio.fixture
async def one_connection(redis_url):
    """A client whose pool holds one connection and refuses a second: calls made
    at once succeed only if they share one round trip."""
    client = aioredis.Redis.from_pool(aioredis.ConnectionPool.from_url(redis_url, decode_responses=True, max_connections=1))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest_asyncio.fixture(params=["pipeline", "wire"])
async def client(request, redis_url) -> AsyncIterator[aioredis.Redis]:
    """A client of each path: a plain redis-py one (the pipeline), ``connect()``'s (the wire)."""
    if is_cluster_url(redis_url):
        pytest.skip("one server's paths")
    made = aioredis.Redis.from_url(redis_url, decode_responses=True) if request.param == "pipeline" else connect(redis_url)
    assert wire.fits(made) == (request.param == "wire")
    await made.flushdb()
    yield made
    await made.aclose()


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[tuple[str, int]]:
    """A Redis of the test's own, to kill, stop and restart: (url, pid)."""
    port = free_port()
    with redis_binary(port) as (url, proc, _):
        yield url, proc.pid


def _wire_of(batch: Batcher) -> wire.Wire:
    assert batch._wire is not None
    return batch._wire


async def _until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_concurrent_calls_share_one_round_trip_and_get_their_own_replies(one_connection):
    batch = Batcher(one_connection)
    echo = one_connection.register_script(ECHO)
    await one_connection.script_load(ECHO)
    replies = await asyncio.gather(*(batch.script(echo, keys=["ezt-test:log"], args=[f"m{i}"]) for i in range(50)))
    assert replies == [f"m{i}" for i in range(50)]
    assert await one_connection.lrange("ezt-test:log", 0, -1) == [f"m{i}" for i in range(50)]  # in call order


async def test_an_error_goes_to_its_caller_only(client):
    batch = Batcher(client)
    fail = client.register_script(FAIL)
    await client.script_load(FAIL)
    await client.set("ezt-test:str", "x")
    ok, bad, hm, wrong, after = await asyncio.gather(
        batch.execute("SET", "ezt-test:k", "v"),
        batch.script(fail, args=["x"]),
        batch.execute("HMGET", "ezt-test:none", "a", "b"),
        batch.execute("HGETALL", "ezt-test:str"),
        batch.execute("INCR", "ezt-test:n"),
        return_exceptions=True,
    )
    assert ok is True and hm == [None, None] and after == 1
    assert isinstance(bad, ResponseError) and "nope x" in str(bad)
    assert isinstance(wrong, ResponseError) and str(wrong).startswith("WRONGTYPE")


async def test_replies_are_parsed_as_redis_py_parses_them(client):
    """Each reply is the one the client's own call gives: hiredis's parse, then the client's response callbacks."""
    await client.hset("ezt-test:h", mapping={"a": "1", "b": "2"})
    await client.zadd("ezt-test:z", {"m": 1.5, "n": 2})
    await client.rpush("ezt-test:l", "x", "y")
    await client.sadd("ezt-test:s", "p", "q")
    await client.xadd("ezt-test:x", {"f": "v"}, id="1-1")
    await client.set("ezt-test:str", "text")
    table = client.register_script(TABLE)
    await client.script_load(TABLE)
    reads = [
        ("HGETALL", "ezt-test:h"),  # -> dict
        ("HGETALL", "ezt-test:none"),  # -> {}
        ("HMGET", "ezt-test:h", "a", "zz"),
        ("ZRANGE", "ezt-test:z", 0, -1, "WITHSCORES"),  # -> [(member, float)]
        ("ZSCORE", "ezt-test:z", "m"),  # -> float
        ("LLEN", "ezt-test:l"),
        ("SMEMBERS", "ezt-test:s"),  # -> set
        ("XRANGE", "ezt-test:x", "-", "+"),  # -> [(id, dict)]
        ("EXISTS", "ezt-test:h", "ezt-test:none"),
        ("GET", "ezt-test:str"),
        ("TTL", "ezt-test:str"),
        ("INCR", "ezt-test:str"),  # an error, changing nothing
        ("EVALSHA", table.sha, 1, "ezt-test:k", "a", "7"),
    ]
    own = []
    for command in reads:
        try:
            own.append(await client.execute_command(*command))
        except ResponseError as exc:
            own.append(exc)
    batch = Batcher(client)
    batched = await asyncio.gather(*(batch.execute(*command) for command in reads), return_exceptions=True)
    assert [repr(r) for r in batched] == [repr(r) for r in own]
    assert batched[0] == {"a": "1", "b": "2"} and batched[4] == 1.5 and batched[6] == {"p", "q"} and batched[7] == [("1-1", {"f": "v"})]
    assert batched[-1] == ["a", 7, ["ezt-test:k"]]
    writes = await asyncio.gather(
        batch.execute("SET", "ezt-test:new", "v"),
        batch.execute("HSET", "ezt-test:h", "c", "3"),
        batch.execute("ZADD", "ezt-test:z", "LT", 1, "m"),
        batch.execute("XACK", "ezt-test:x", "g", "1-1"),
    )
    assert writes == [True, 1, 0, 0]


async def test_a_script_the_server_lost_is_loaded_again(client):
    batch = Batcher(client)
    echo = client.register_script(ECHO)
    await client.script_load(ECHO)
    assert await batch.script(echo, keys=["ezt-test:log"], args=["before"]) == "before"
    await client.script_flush()
    replies = await asyncio.gather(
        batch.execute("INCR", "ezt-test:n"),
        *(batch.script(echo, keys=["ezt-test:log"], args=[i]) for i in range(3)),
        batch.execute("INCR", "ezt-test:n"),
    )
    assert replies == [1, "0", "1", "2", 2]
    assert await client.lrange("ezt-test:log", 0, -1) == ["before", "0", "1", "2"]


async def test_batches_are_bounded(client):
    batch = Batcher(client, max_batch=10)
    replies = await asyncio.gather(*(batch.execute("INCR", "ezt-test:n") for _ in range(35)))
    assert sorted(replies) == list(range(1, 36))


async def test_the_wire_keeps_every_call_in_order_on_one_connection(client):
    """Batches follow each other without waiting for replies, on one connection: Redis runs every call in the order it
    was made, across batches larger than max_batch, and each of many concurrent callers' calls in its order."""
    if not wire.fits(client):
        pytest.skip("separate pipelines may run out of order")
    batch = Batcher(client, max_batch=30)
    replies = await asyncio.gather(*(batch.execute("INCR", "ezt-test:n") for _ in range(1000)))
    assert replies == list(range(1, 1001))

    async def caller(i: int) -> list[int]:
        return [await batch.execute("RPUSH", f"ezt-test:c{i}", j) for j in range(20)]

    lengths = await asyncio.gather(*(caller(i) for i in range(200)))
    assert lengths == [list(range(1, 21))] * 200
    assert await client.lrange("ezt-test:c7", 0, -1) == [str(j) for j in range(20)]
    assert _wire_of(batch)._conn is not None and len(client.connection_pool._in_use_connections) == 1


async def test_a_cancelled_caller_leaves_the_others_their_replies(client):
    batch = Batcher(client)
    calls = [batch.execute("INCR", "ezt-test:n") for _ in range(5)]
    calls[1].cancel()
    calls[3].cancel()
    assert [await calls[i] for i in (0, 2, 4)] == [1, 3, 5]  # the cancelled calls were made all the same
    assert await batch.execute("GET", "ezt-test:n") == "5"


async def test_an_argument_redis_cannot_take_fails_its_own_call(client):
    if not wire.fits(client):
        pytest.skip("redis-py's pipeline fails the whole batch")
    batch = Batcher(client)
    ok, bad, after = await asyncio.gather(
        batch.execute("SET", "ezt-test:a", "1"),
        batch.execute("SET", "ezt-test:b", None),
        batch.execute("INCR", "ezt-test:a"),
        return_exceptions=True,
    )
    assert ok is True and isinstance(bad, DataError) and after == 2


async def test_redis_killed_mid_batch_fails_the_calls_in_flight_and_the_next_call_reconnects(own_redis):
    url, pid = own_redis
    client = connect(url)
    try:
        batch = Batcher(client)
        busy = client.register_script(BUSY)
        echo = client.register_script(ECHO)
        await client.script_load(BUSY)
        in_flight = [batch.script(busy, args=[3000]), *(batch.execute("INCR", "ezt-test:n") for _ in range(20))]
        await _until(lambda: len(_wire_of(batch)._sent) == 21)  # written: the server is busy with the first
        os.kill(pid, signal.SIGKILL)
        failed = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(f, RedisConnectionError) for f in failed), failed
        with pytest.raises(UNAVAILABLE):  # down: a call fails at once, not later
            await batch.execute("INCR", "ezt-test:n")

        with redis_binary(urlsplit(url).port):  # back on the same port, empty
            assert await asyncio.gather(batch.execute("INCR", "ezt-test:n"), batch.script(echo, ["ezt-test:log"], ["x"])) == [1, "x"]
    finally:
        await client.aclose()


async def test_redis_restarted_between_calls_the_next_call_works(own_redis):
    url, pid = own_redis
    port = urlsplit(url).port
    client = connect(url)
    try:
        batch = Batcher(client)
        assert await batch.execute("INCR", "ezt-test:n") == 1
        os.kill(pid, signal.SIGTERM)  # a clean shutdown closes the connection
        await _until(lambda: _wire_of(batch)._transport is None)
        with redis_binary(port):
            assert await batch.execute("INCR", "ezt-test:n") == 1
    finally:
        await client.aclose()


async def test_a_server_that_stops_answering_fails_the_calls_in_flight(own_redis):
    url, pid = own_redis
    client = connect(url)
    try:
        batch = Batcher(client)
        _wire_of(batch).reply_wait_s = 0.2
        assert await batch.execute("PING") is True
        await _until(lambda: _wire_of(batch)._conn is None)  # idle: given back; the next call takes it again
        assert await batch.execute("INCR", "ezt-test:n") == 1
        os.kill(pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(5):
                failed = await asyncio.gather(*(batch.execute("INCR", "ezt-test:n") for _ in range(3)), return_exceptions=True)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(isinstance(f, RedisTimeoutError) for f in failed), failed
        assert await batch.execute("INCR", "ezt-test:n") in (2, 5)  # on a new connection (the woken server may have run the 3)
    finally:
        await client.aclose()


async def test_the_connection_authenticates_selects_the_db_and_names_itself_again_after_a_reconnect(own_redis):
    url, _pid = own_redis
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    await admin.execute_command("ACL", "SETUSER", "batcher", "on", ">s3cret", "~*", "+@all")
    await admin.config_set("requirepass", "adminpass")
    await admin.aclose()
    host_port = urlsplit(url).netloc
    admin = aioredis.Redis.from_url(f"redis://:adminpass@{host_port}/2", decode_responses=True)
    client = connect(f"redis://batcher:s3cret@{host_port}/2?client_name=ezt-batcher")
    try:
        batch = Batcher(client)
        assert await asyncio.gather(batch.execute("SET", "ezt-test:k", "v"), batch.execute("CLIENT", "GETNAME")) == [True, "ezt-batcher"]
        assert await admin.get("ezt-test:k") == "v"  # db 2
        await admin.execute_command("CLIENT", "KILL", "USER", "batcher")
        await _until(lambda: _wire_of(batch)._transport is None)
        assert await asyncio.gather(batch.execute("GET", "ezt-test:k"), batch.execute("ACL", "WHOAMI")) == ["v", "batcher"]
    finally:
        await client.aclose()
        await admin.aclose()


async def test_closing_the_client_fails_the_calls_in_flight_without_a_hang(client):
    if not wire.fits(client):
        pytest.skip("the wire's connection")
    batch = Batcher(client)
    busy = client.register_script(BUSY)
    await client.script_load(BUSY)
    in_flight = [batch.script(busy, args=[500]), batch.execute("INCR", "ezt-test:n")]
    await _until(lambda: len(_wire_of(batch)._sent) == 2)
    async with asyncio.timeout(5):
        await client.aclose()
        failed = await asyncio.gather(*in_flight, return_exceptions=True)
    assert all(isinstance(f, RedisConnectionError) for f in failed), failed


async def test_a_cluster_or_tls_keeps_the_pipeline():
    for url, fits in [
        ("redis://127.0.0.1:1/0", True),
        ("rediss://127.0.0.1:1/0", False),
        ("redis+cluster://127.0.0.1:1", False),
        ("rediss+cluster://127.0.0.1:1", False),
    ]:
        made = connect(url)  # nothing connects yet
        try:
            assert wire.fits(made) is fits and (Batcher(made)._wire is not None) is fits, url
        finally:
            await made.aclose()

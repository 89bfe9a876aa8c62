"""RegionStates: the coordinator's region states, cached per node; an out-of-date cache is read once for all callers."""

import asyncio
import time

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from ezthrottle_server.common import keys
from ezthrottle_server.common.routing import RegionStates

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def one_connection(redis_url):
    """A client whose pool holds one connection and refuses a second: two reads at once would fail."""
    client = aioredis.Redis.from_pool(aioredis.ConnectionPool.from_url(redis_url, decode_responses=True, max_connections=1))
    await client.flushdb()
    yield client
    await client.aclose()


async def _publish(client: aioredis.Redis, state: str) -> None:
    view = {"state": state, "reason": "test", "updated_ms": int(time.time() * 1000)}
    await client.hset(keys.region_states(), "iad", orjson.dumps(view).decode())


async def test_callers_waiting_on_an_out_of_date_cache_share_one_read(one_connection):
    await _publish(one_connection, "up")
    states = RegionStates(one_connection, ["iad"], cache_s=60)
    before = await _hgetalls(one_connection)
    answers = await asyncio.gather(*(states.states() for _ in range(50)))
    assert answers == [{"iad": "up"}] * 50
    assert await _hgetalls(one_connection) - before == 2  # region states and heartbeats, once


async def _hgetalls(client: aioredis.Redis) -> int:
    """HGETALLs the server has run so far (its counters are the session's: compare two readings)."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_a_caller_cancelled_mid_read_leaves_it_to_the_others(one_connection):
    await _publish(one_connection, "degraded")
    states = RegionStates(one_connection, ["iad"], cache_s=60)
    first = asyncio.ensure_future(states.states())
    second = asyncio.ensure_future(states.states())
    await asyncio.sleep(0)  # both are waiting on the one read
    first.cancel()
    assert await second == {"iad": "degraded"}
    assert first.cancelled()
    await _publish(one_connection, "down")
    assert await states.states() == {"iad": "degraded"}  # cached: the read was not lost with its first caller


async def test_states_never_lag_the_views_the_api_shows(one_connection):
    """GET /api/v1/regions shows views(); a submission routes by states(). Once views() has shown a region down,
    states() says so too: the states are worked out again from every newer read, not on a clock of their own
    (before, states() could answer from the read before for up to cache_s more: a job accepted for a region the
    API had just shown down)."""
    await _publish(one_connection, "up")
    states = RegionStates(one_connection, ["iad"], cache_s=1.0)
    assert (await states.views())["iad"]["state"] == "up"  # read at t = 0
    await asyncio.sleep(0.6)
    assert await states.states() == {"iad": "up"}  # from the read at t = 0
    await _publish(one_connection, "down")
    await asyncio.sleep(0.6)  # the read at t = 0 is out of date now; the states worked out at 0.6 are not, by their own clock
    assert (await states.views())["iad"]["state"] == "down"  # read again
    assert await states.states() == {"iad": "down"}

"""The pooled client waits for a free connection rather than failing when all are busy."""

import asyncio

import pytest

from ezthrottle_server.common.redisconn import connect

pytestmark = pytest.mark.asyncio


async def test_more_commands_in_flight_than_connections_wait_their_turn(redis_url):
    r = connect(redis_url, max_connections=2)
    try:
        # 20 commands that each hold a connection for 20 ms, on a pool of 2
        replies = await asyncio.gather(*(r.blpop([f"ezt-test:pool:{i}"], timeout=0.02) for i in range(20)))
        assert replies == [None] * 20
        assert await r.ping()
    finally:
        await r.aclose()

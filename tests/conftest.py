"""Shared fixtures: a real Redis, real loopback servers, real service apps."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ezthrottle_server.common import apikeys
from ezthrottle_server.common.config import Settings
from ezthrottle_server.common.redisconn import connect
from support.redis_cluster import redis_cluster, session_cluster_wanted
from support.redis_server import session_redis
from support.services import RunningApp, make_settings
from support.targets import Target, WebhookReceiver


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis for the session; ``EZT_TEST_REDIS_CLUSTER=1``: a local 3-master Redis Cluster."""
    if session_cluster_wanted() and not os.environ.get("REDIS_URL"):
        with redis_cluster(masters=3) as cluster:
            yield cluster.url
        return
    with session_redis() as url:
        yield url


async def flush_all(client: Any) -> None:
    """FLUSHALL on the server, or on every master of a cluster."""
    if isinstance(client, RedisCluster):
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.flushall()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    if isinstance(client, RedisCluster):
        client.command_flags["KEYS"] = RedisCluster.PRIMARIES  # tests list keys of every master, merged
    await flush_all(client)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Target]:
    server = await Target().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = await WebhookReceiver().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def api_key(redis: aioredis.Redis) -> str:
    key, _ = await apikeys.create_key(redis, "acme")
    return key


@pytest_asyncio.fixture
async def other_api_key(redis: aioredis.Redis) -> str:
    key, _ = await apikeys.create_key(redis, "globex")
    return key


StartEdge = Callable[..., Awaitable[RunningApp]]


@pytest_asyncio.fixture
async def start_edge(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[StartEdge]:
    """Start edge apps in-process: ``await start_edge("iad", visibility_timeout_ms=500)``."""
    from ezthrottle_server.edge.app import create_app

    running: list[RunningApp] = []

    async def start(region: str = "iad", **overrides: Any) -> RunningApp:
        overrides.setdefault("node_id", f"edge-{region}-test-{len(running)}")
        settings = make_settings("edge", redis_url, region, **overrides)
        app = await RunningApp(create_app(settings), settings).start()
        running.append(app)
        return app

    try:
        yield start
    finally:
        for app in reversed(running):
            await app.stop()


@pytest_asyncio.fixture
async def edge(start_edge: StartEdge) -> RunningApp:
    return await start_edge("iad")


@pytest_asyncio.fixture
async def coordinator(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[RunningApp]:
    from ezthrottle_server.coordinator.app import create_app

    settings = make_settings("coordinator", redis_url, node_id="coordinator-test")
    app = await RunningApp(create_app(settings), settings).start()
    try:
        yield app
    finally:
        await app.stop()


def settings_for(role: str, redis_url: str, region: str | None = None, **overrides: Any) -> Settings:
    return make_settings(role, redis_url, region, **overrides)

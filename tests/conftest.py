"""Shared fixtures: a real Redis, real loopback servers, real service apps."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ezthrottle_server.common import apikeys, webhooks
from ezthrottle_server.common.config import Settings
from ezthrottle_server.common.redisconn import connect
from support.redis_cluster import redis_cluster, session_cluster_wanted
from support.redis_server import session_redis
from support.services import RunningApp, StartApp, app_starter, make_settings
from support.targets import Target, WebhookReceiver, serving


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
    webhooks._secrets.clear()  # the secrets this process kept (for a second) were the flushed Redis's
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Target]:
    async with serving(Target()) as server:
        yield server


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with serving(WebhookReceiver()) as server:
        yield server


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


StartEdge = StartApp


@pytest_asyncio.fixture
async def start_edge(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[StartEdge]:
    """Start edge apps in-process: ``await start_edge("iad", visibility_timeout_ms=500)``."""
    from ezthrottle_server.edge.app import create_app

    async with app_starter("edge", redis_url, create_app, region="iad") as start:
        yield start


@pytest_asyncio.fixture
async def edge(start_edge: StartEdge) -> RunningApp:
    return await start_edge("iad")


@pytest_asyncio.fixture
async def start_coordinator(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[StartApp]:
    """Start coordinator apps in-process: ``await start_coordinator(domains_file=...)``."""
    from ezthrottle_server.coordinator.app import create_app

    async with app_starter("coordinator", redis_url, create_app) as start:
        yield start


@pytest_asyncio.fixture
async def coordinator(start_coordinator: StartApp) -> RunningApp:
    return await start_coordinator(node_id="coordinator-test")


def settings_for(role: str, redis_url: str, region: str | None = None, **overrides: Any) -> Settings:
    return make_settings(role, redis_url, region, **overrides)

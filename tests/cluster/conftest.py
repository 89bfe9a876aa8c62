"""Redis Cluster: a real 3-master cluster on loopback, the services in-process on it.

Every fixture of ``tests/conftest.py`` works here, on the cluster: ``redis_url``
is the cluster's URL (``redis+cluster://…``), ``redis`` a ``RedisCluster``
client flushed on every master, and the services run with
``EZT_PARTITIONS=4``, so job partitions land on every master
(``{ezt:p0}`` … ``{ezt:p3}`` hash to slots 13275, 9210, 5017, 952).
Every test runs under a slot audit (MONITOR on every master).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from cluster.helpers import FAST, PARTITIONS
from cluster.slot_audit import SlotAudit, violations
from integration.delivery.conftest import receivers  # noqa: F401  (a fixture: webhook receivers)
from integration.delivery.helpers import FAST as DELIVERY_FAST
from support.redis_cluster import LocalRedisCluster, redis_cluster
from support.services import RunningApp, make_settings


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalRedisCluster]:
    with redis_cluster(masters=3) as c:
        yield c


@pytest.fixture(scope="session")
def redis_url(cluster: LocalRedisCluster) -> str:
    return cluster.url


@pytest.fixture(autouse=True)
def slot_audit(cluster: LocalRedisCluster) -> Iterator[SlotAudit]:
    """Every test here runs under MONITOR on every master: at the end, nothing may have
    crossed a slot, nor may a script have touched a key it was not given (slot_audit.py)."""
    audit = SlotAudit(cluster).start()
    yield audit
    if not audit.stopped:
        problems = violations(cluster, audit.stop())
        assert not problems, "cross-slot use on the cluster:\n" + "\n".join(problems[:20])


@pytest_asyncio.fixture
async def start_edge(start_edge: Any) -> Any:
    """The root fixture's edges, with this module's partitions and fast retries."""

    async def start(region: str = "iad", **overrides: Any) -> RunningApp:
        for name, value in {"partitions": PARTITIONS, **FAST}.items():
            overrides.setdefault(name, value)
        return await start_edge(region, **overrides)

    return start


@pytest_asyncio.fixture
async def coordinator(redis: Any, redis_url: str) -> AsyncIterator[RunningApp]:
    from ezthrottle_server.coordinator.app import create_app

    settings = make_settings("coordinator", redis_url, node_id="coordinator-cluster", partitions=PARTITIONS)
    app = await RunningApp(create_app(settings), settings).start()
    try:
        yield app
    finally:
        await app.stop()


@pytest_asyncio.fixture
async def delivery(redis: Any, redis_url: str) -> AsyncIterator[RunningApp]:
    from ezthrottle_server.delivery.app import create_app

    settings = make_settings("delivery", redis_url, node_id="delivery-cluster", partitions=PARTITIONS, **DELIVERY_FAST)
    app = await RunningApp(create_app(settings, stop_grace_s=1.0), settings).start()
    try:
        yield app
    finally:
        await app.stop()

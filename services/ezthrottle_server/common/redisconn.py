"""Redis connection and the Lua scripts, loaded in one place.

Scripts are ``.lua`` files beside this module, read with importlib.resources
and run through redis-py ``Script`` objects: EVALSHA, reloaded on NOSCRIPT.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "submit", "start_attempt", "finish", "requeue", "release_delayed", "renew_lease", "release_lease",
    "delivery_plan", "delivery_record", "delivery_release", "delivery_replay",
    "spawn_child", "claim_continuation", "fire_timers",
)


POOL_WAIT_S = 10  # longest wait for a free pooled connection before ConnectionError


def connect(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A pooled asyncio client that returns str, not bytes."""
    # Blocking: a command waits (up to POOL_WAIT_S) for a free connection when
    # all ``max_connections`` are busy, instead of failing at once with "Too
    # many connections" (a busy edge has more sends in flight than connections).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        health_check_interval=30,
        socket_keepalive=True,
    )
    return aioredis.Redis.from_pool(pool)


def load_script_source(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text()


class Scripts:
    """The Lua scripts registered on one client; attribute per script."""

    submit: AsyncScript
    start_attempt: AsyncScript
    finish: AsyncScript
    requeue: AsyncScript
    release_delayed: AsyncScript
    renew_lease: AsyncScript
    release_lease: AsyncScript
    spawn_child: AsyncScript
    claim_continuation: AsyncScript
    fire_timers: AsyncScript
    delivery_plan: AsyncScript
    delivery_record: AsyncScript
    delivery_release: AsyncScript
    delivery_replay: AsyncScript

    def __init__(self, client: aioredis.Redis) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, client.register_script(load_script_source(name)))

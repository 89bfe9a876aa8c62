"""Redis connection, and the common Lua scripts registered on a client.

Scripts are ``.lua`` files in ``scripts/``, loaded by :mod:`.scripting` (the
one loader, which the pacing scripts and ``accept.lua`` use too) and run
through redis-py ``Script`` objects: EVALSHA, reloaded on NOSCRIPT (also
after a failover: a promoted replica may not have them cached).

One server or a cluster
-----------------------
``REDIS_URL=redis://host:port/0`` (``rediss://`` for TLS) is one server (or a
managed primary behind one endpoint); :func:`connect` returns a
``redis.asyncio.Redis``. ``redis+cluster://host:port`` (``rediss+cluster://``)
is Redis Cluster: :func:`connect` returns a ``redis.asyncio.RedisCluster``
that discovers every node from that one (a managed cluster's configuration
endpoint, or any node), follows MOVED/ASK, refreshes the slot map and retries
on connection errors and CLUSTERDOWN, so a master failover is a few seconds of
errors, not an outage. The same code runs on both: every Lua script and
multi-key command stays in one hash slot (``keys.py``), and no code uses
MULTI/EXEC (a transaction pipeline), which the cluster client refuses.

Pub/sub is not slot-bound: on a cluster, PUBLISH (also from a script) reaches
every node, so a subscriber may listen on any one. redis-py's asyncio
``RedisCluster`` has no ``pubsub()``: :func:`connect_pubsub` gives a plain
client whose connection goes to one live node of the cluster, and to another
one when it breaks.

Code that loops against Redis treats :data:`UNAVAILABLE` as "Redis is (partly)
out of reach for now": wait and try again.
"""

from __future__ import annotations

import socket
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from . import scripting

SCRIPT_NAMES = (
    "submit",
    "start_attempt",
    "finish",
    "requeue",
    "release_delayed",
    "renew_lease",
    "release_lease",
    "delivery_plan",
    "delivery_record",
    "delivery_release",
    "delivery_replay",
    "spawn_child",
    "claim_continuation",
    "fire_timers",
    "count_failure",
    "replace_hash",
    "repair",
    "swap_field",
    "reserve_quota",
    "evacuate",
    "cancel",
    "schedule_write",
    "schedule_delete",
    "schedule_claim",
    "schedule_fired",
)


RedisClient: TypeAlias = aioredis.Redis | RedisCluster

# Redis, or the part of a cluster that holds a key, is out of reach for now
# (down, failing over, resharding): wait and try again. Everything else is a bug
# (a cross-slot command, for one, is a RedisClusterException and not in here).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,  # also BusyLoadingError (a node loading its data); and no cluster node reachable
    RedisTimeoutError,
    ClusterError,  # CLUSTERDOWN, MASTERDOWN, redirections exhausted
    TryAgainError,  # a multi-key command during a slot migration
    SlotNotCoveredError,  # a slot without a master for a moment
)
UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, OSError)  # for loops: also raw socket errors

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CLUSTER_CONNECT_TIMEOUT_S = 2.0
# redis-py's cluster client cannot wait for a free connection (no blocking
# pool): past its cap a command fails at once. So the cap per node sits above
# what one process ever has in flight (sends, blocking reads, API calls);
# connections are opened only as needed.
CLUSTER_MIN_CONNECTIONS_PER_NODE = 512


def _dead_peer_options() -> dict[int, int]:
    """TCP options (Linux) that give up on a node that vanished without closing its
    sockets (host or network lost) in about 15 s: keepalive probes on idle
    connections (a blocking XREADGROUP), a cap on unacknowledged sends.

    Not ``socket_timeout``: with it redis-py (5.x) sends through
    ``asyncio.wait_for``, which on Python 3.11 can swallow a task's
    cancellation, and a loop that misses its cancellation never stops.
    """
    wanted = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 15_000}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return urlsplit(url).scheme.lower() in _CLUSTER_SCHEMES


def _node_url(url: str) -> str:
    """The plain ``redis://`` / ``rediss://`` form of a cluster URL (for redis-py's parser)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES[parts.scheme.lower()]))


POOL_WAIT_S = 10  # longest wait for a free pooled connection before ConnectionError

try:  # hiredis packs commands in C; redis-py only uses it to parse replies
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is optional
    _hiredis_pack = None  # type: ignore[assignment]  # then no connection packs with it (connect())


class _HiredisPackedConnection(Connection):
    """A redis-py connection whose commands are packed by hiredis.

    The bytes are the ones redis-py's own packer writes (a command name with
    spaces, ``"CLIENT SETNAME"``, split as it does); anything hiredis refuses
    (None, bool, …) goes to redis-py's packer, which raises its ``DataError``.
    Packing was 8-16% of a busy edge's CPU in Python (``submit.lua`` alone
    has ~45 arguments).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0] if args else b""
        if (isinstance(head, str) and " " in head) or (isinstance(head, bytes) and b" " in head):
            args = (*head.split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            return super().pack_command(*args)


def connect(url: str, *, max_connections: int = 64) -> RedisClient:
    """A pooled asyncio client that returns str, not bytes.

    ``max_connections`` bounds the pool; on a cluster, per node and at least
    ``CLUSTER_MIN_CONNECTIONS_PER_NODE``.
    """
    if is_cluster_url(url):
        return _Cluster.from_url(
            _node_url(url),
            decode_responses=True,
            max_connections=max(max_connections, CLUSTER_MIN_CONNECTIONS_PER_NODE),
            health_check_interval=30,
            socket_keepalive=True,
            socket_keepalive_options=_dead_peer_options(),
            socket_connect_timeout=CLUSTER_CONNECT_TIMEOUT_S,
            # Per node: reconnect twice with jittered backoff; then the client
            # refreshes the slot map and retries the command (3 times), which
            # is what finds a promoted replica after a failover.
            retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), 2),
            cluster_error_retry_attempts=3,
        )
    # Blocking: a command waits (up to POOL_WAIT_S) for a free connection when
    # all ``max_connections`` are busy, instead of failing at once with "Too
    # many connections" (a busy edge has more sends in flight than connections).
    extra: dict[str, Any] = {}
    if _hiredis_pack is not None and urlsplit(url).scheme.lower() == "redis":  # TCP without TLS
        extra["connection_class"] = _HiredisPackedConnection
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        health_check_interval=30,
        socket_keepalive=True,
        **extra,
    )
    return aioredis.Redis.from_pool(pool)


def connect_pubsub(url: str) -> aioredis.Redis:
    """A plain client for pub/sub (``client.pubsub()``): the server, or one live node of a cluster.

    On a cluster, PUBLISH is broadcast to every node, so subscribing on any one
    node hears every channel. The connection goes to the URL's node or any node
    it has learnt of (``CLUSTER NODES`` at each connect); when it breaks, the
    next connect tries the others, so a failed node is left behind. Messages
    published while it reconnects are missed, as with one server.
    """
    if not is_cluster_url(url):
        client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, max_connections=8, health_check_interval=30, socket_keepalive=True
        )
        return client
    kwargs: dict[str, Any] = dict(parse_url(_node_url(url)))
    if kwargs.pop("db", 0):
        raise ValueError(f"a cluster URL cannot name a database: {url}")
    tls = kwargs.pop("connection_class", Connection) is SSLConnection
    seed = (kwargs.pop("host", "localhost"), int(kwargs.pop("port", 6379)))
    pool = aioredis.ConnectionPool(
        connection_class=_AnyNodeSSLConnection if tls else _AnyNodeConnection,
        nodes=_KnownNodes(seed),
        decode_responses=True,
        max_connections=8,
        health_check_interval=30,
        socket_keepalive=True,
        socket_keepalive_options=_dead_peer_options(),
        socket_connect_timeout=CLUSTER_CONNECT_TIMEOUT_S,
        **kwargs,
    )
    return aioredis.Redis.from_pool(pool)


async def info_per_master(client: RedisClient, section: str) -> list[dict[str, Any]]:
    """``INFO <section>`` of the server, or of every master of a cluster (each has its own memory)."""
    if isinstance(client, RedisCluster):
        return list((await client.info(section, target_nodes=RedisCluster.PRIMARIES)).values())
    return [await client.info(section)]


class _Cluster(RedisCluster):
    """``RedisCluster`` that can always find its cluster again.

    redis-py (5.x) drops a node from its startup nodes on every connection
    error, and forgets the cluster for good once they are all gone (a
    restart of every node, a network blip; redis-py issues #3221, #3693).
    Before each (re)discovery the URL's node is put back, so the client
    recovers as soon as that address answers again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeds = [(n.host, n.port) for n in self.nodes_manager.startup_nodes.values()]

    async def initialize(self) -> _Cluster:
        if self._initialize:
            startup = self.nodes_manager.startup_nodes
            for host, port in self._seeds:
                node = ClusterNode(host, port, **self.connection_kwargs)
                startup.setdefault(node.name, node)
        try:
            await super().initialize()
        except SlotNotCoveredError:
            raise
        except RedisClusterException as exc:
            if "cannot be connected" in str(exc) or "not covered" in str(exc):
                # No node answered, or none serves every slot yet: Redis is down
                # for now, like a refused connection to one server.
                raise RedisConnectionError(str(exc)) from exc
            raise
        return self


class _KnownNodes:
    """Addresses of a cluster's nodes, the seed first; shared by a pool's connections."""

    def __init__(self, seed: tuple[str, int]) -> None:
        self.seed = seed
        self.learnt: list[tuple[str, int]] = []

    def candidates(self, current: tuple[str, int]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for addr in (current, *self.learnt, self.seed):
            if addr not in out:
                out.append(addr)
        return out

    def learn(self, cluster_nodes: str | bytes) -> None:
        """Remember the nodes that ``CLUSTER NODES`` lists as reachable."""
        text = cluster_nodes.decode() if isinstance(cluster_nodes, bytes) else cluster_nodes
        found: list[tuple[str, int]] = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            flags = set(fields[2].split(","))
            if flags & {"fail", "fail?", "noaddr", "handshake"}:
                continue
            if fields[7] != "connected" and "myself" not in flags:
                continue
            addr = fields[1].split("@", 1)[0]
            host, _, port = addr.rpartition(":")
            if host and port.isdigit() and int(port) > 0:
                found.append((host.strip("[]"), int(port)))
        if found:
            self.learnt = found


class _AnyNode:
    """A connection to whichever node of a cluster answers (mixed into a redis-py Connection)."""

    host: str
    port: int

    def __init__(self, *, nodes: _KnownNodes, **kwargs: Any) -> None:
        self._nodes = nodes
        kwargs.setdefault("host", nodes.seed[0])
        kwargs.setdefault("port", nodes.seed[1])
        super().__init__(**kwargs)

    async def _connect(self) -> None:
        last: BaseException | None = None
        for host, port in self._nodes.candidates((self.host, self.port)):
            self.host, self.port = host, port
            try:
                await super()._connect()  # type: ignore[misc]
                return
            except (TimeoutError, OSError) as exc:
                last = exc
        assert last is not None
        raise last

    async def on_connect(self) -> None:
        await super().on_connect()  # type: ignore[misc]
        try:
            await self.send_command("CLUSTER", "NODES")  # type: ignore[attr-defined]
            self._nodes.learn(await self.read_response())  # type: ignore[attr-defined]
        except ResponseError:
            pass  # not a cluster node after all: stay with what answered


class _AnyNodeConnection(_AnyNode, Connection):
    pass


class _AnyNodeSSLConnection(_AnyNode, SSLConnection):
    pass


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
    evacuate: AsyncScript
    fire_timers: AsyncScript
    delivery_plan: AsyncScript
    delivery_record: AsyncScript
    delivery_release: AsyncScript
    delivery_replay: AsyncScript
    count_failure: AsyncScript
    replace_hash: AsyncScript
    repair: AsyncScript
    swap_field: AsyncScript
    reserve_quota: AsyncScript
    cancel: AsyncScript
    schedule_write: AsyncScript
    schedule_delete: AsyncScript
    schedule_claim: AsyncScript
    schedule_fired: AsyncScript

    def __init__(self, client: RedisClient) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, scripting.register(client, name))

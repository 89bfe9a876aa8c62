"""The real local cluster for e2e tests: `python -m ezthrottle_server.devcluster up`
(what `make up-local` runs) on free ports, in a temporary state directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from .redis_server import free_port
from .services import REGIONS_FILE


def cli(
    state: Path,
    regions: Path,
    *args: str,
    env_extra: dict[str, str] | None = None,
    timeout: float = 90,
    inherit_ezt_env: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python -m ezthrottle_server.devcluster <args>`` on the cluster of ``state`` and ``regions``.

    Prometheus stays off unless ``env_extra`` turns it on; ``inherit_ezt_env=False``
    passes none of this process's ``EZT_*`` variables.
    """
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and (inherit_ezt_env or not k.startswith("EZT_"))}
    env.update(EZT_LOCAL_DIR=str(state), EZT_REGIONS_FILE=str(regions), EZT_SIMULATE_LATENCY="0", EZT_LOCAL_PROMETHEUS="0")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "ezthrottle_server.devcluster", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def cluster_files(root: Path) -> tuple[Path, Path]:
    """``root/regions.yaml`` (the repository's, every port a free one) and the state directory beside it."""
    config = yaml.safe_load(REGIONS_FILE.read_text())
    config["redis"]["port"] = free_port()
    config["coordinator"]["port"] = free_port()
    config["delivery"]["port"] = free_port()
    for region in config["regions"]:
        region["port"] = free_port()
    regions = root / "regions.yaml"
    regions.write_text(yaml.safe_dump(config))
    return root / "state", regions


@contextlib.contextmanager
def local_cluster(root: Path, env_extra: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield cluster.json's content plus ``state``, ``regions_file``, ``stdout`` (of ``up``) and ``cli(*args)``."""
    state, regions = cluster_files(root)
    up = cli(state, regions, "up", env_extra=env_extra)
    assert up.returncode == 0, up.stderr + up.stdout
    info: dict[str, Any] = orjson.loads((state / "cluster.json").read_bytes())
    info.update(state=state, regions_file=regions, stdout=up.stdout)
    info["cli"] = lambda *args: cli(state, regions, *args, env_extra=env_extra)
    try:
        yield info
    finally:
        down = cli(state, regions, "down", env_extra=env_extra)
        assert down.returncode == 0, down.stderr


def pids(info: dict[str, Any]) -> dict[str, int]:
    return orjson.loads((info["state"] / "cluster.json").read_bytes())["pids"]

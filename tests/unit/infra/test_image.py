"""The container image: Dockerfile properties, .dockerignore, the role entrypoint, the health check.

No Docker engine runs here, so the image is never built: these tests read the
Dockerfile, run the entrypoint script with ``sh`` (``--print`` and real runs
that stop at config errors) and run the health check against a loopback server.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ezthrottle_server.infra import healthcheck
from ezthrottle_server.infra import lock as lock_module

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "infra" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
ROLES = ("edge", "coordinator", "delivery", "admin")


# -- Dockerfile --------------------------------------------------------------


def parse_dockerfile(text: str) -> list[list[tuple[str, str]]]:
    """Stages, each a list of (INSTRUCTION, arguments), continuation lines joined."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _args(stage: list[tuple[str, str]], instr: str) -> list[str]:
    return [a for i, a in stage if i == instr]


def _arg_default(name: str) -> str:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(f"ARG {name}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no ARG {name}= default in the Dockerfile")


def test_multi_stage_on_python_311_slim(stages: list[list[tuple[str, str]]]) -> None:
    assert len(stages) >= 2, "the Dockerfile should build in one stage and run in another"
    for stage in stages:
        base = _args(stage, "FROM")[0].split()[0]
        if base.startswith("${"):
            base = _arg_default(base.strip("${}"))
        assert base == "python:3.11-slim"
    runtime = stages[-1]
    assert any(a.startswith("--from=") for a in _args(runtime, "COPY")), "runtime stage should copy the build stage's output"
    # The compiler stays in the build stage.
    assert not any("build-essential" in a or "gcc" in a for a in _args(runtime, "RUN"))


def test_installs_the_server_distribution_from_the_repo(stages: list[list[tuple[str, str]]]) -> None:
    build = stages[0]
    copies = " ".join(_args(build, "COPY"))
    assert "pyproject.toml" in copies and "services" in copies
    assert any("pip install" in a and a.rstrip().endswith("/src") for a in _args(build, "RUN"))


def test_runs_as_a_numeric_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    users = _args(stages[-1], "USER")
    assert users, "the runtime stage sets no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER should be a numeric non-root uid (Kubernetes runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    from ezthrottle_server.infra import k8s

    assert int(uid) == k8s.UID, "the manifests' runAsUser and the image's USER differ"


def test_healthcheck_runs_the_urllib_health_module(stages: list[list[tuple[str, str]]]) -> None:
    checks = _args(stages[-1], "HEALTHCHECK")
    assert len(checks) == 1
    assert "curl" not in checks[0]
    assert "CMD" in checks[0] and "ezthrottle_server.infra.healthcheck" in checks[0]
    assert importlib.util.find_spec("ezthrottle_server.infra.healthcheck") is not None


def test_entrypoint_is_the_role_script(stages: list[list[tuple[str, str]]]) -> None:
    runtime = stages[-1]
    entry = _args(runtime, "ENTRYPOINT")
    assert entry == ['["ezthrottle-entrypoint"]']
    copies = [a.split() for a in _args(runtime, "COPY")]
    assert ["infra/docker/entrypoint.sh", "/usr/local/bin/ezthrottle-entrypoint"] in copies
    env = " ".join(_args(runtime, "ENV"))
    for expected in ("EZT_HOST=0.0.0.0", "EZT_PROFILE=production", "EZT_REGIONS_FILE=/etc/ezthrottle/regions.yaml"):
        assert expected in env
    assert [a[-1] for a in copies if a[0] == "regions.yaml"] == ["/etc/ezthrottle/regions.yaml"]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent directory counts."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        for cand in candidates:
            if fnmatch.fnmatchcase(cand, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(cand.rsplit("/", 1)[-1], pat[3:])):
                ignored = not negate
                break
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest(stages: list[list[tuple[str, str]]]) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    sources: list[str] = []
    for stage in stages:
        for args in _args(stage, "COPY"):
            if args.startswith("--from="):
                continue
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        assert not _ignored(src, patterns), f"{src} is copied by the Dockerfile but excluded by .dockerignore"
    assert not _ignored("services/ezthrottle_server/edge/worker.py", patterns)
    for secret_or_bulk in (".git/config", ".venv/bin/python", ".local/cluster.json", "tests/conftest.py"):
        assert _ignored(secret_or_bulk, patterns), f"{secret_or_bulk} would be sent to the Docker build"
    assert _ignored("services/ezthrottle_server/__pycache__/x.pyc", patterns)


# -- the entrypoint script ---------------------------------------------------


def run_entrypoint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60, check=False
    )


def test_entrypoint_is_an_executable_posix_script() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "entrypoint.sh lost its executable bit"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("role", ROLES)
def test_entrypoint_maps_each_role_to_its_module(role: str) -> None:
    out = run_entrypoint("--print", role)
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv == ["python", "-m", f"ezthrottle_server.{role}"]
    assert importlib.util.find_spec(f"ezthrottle_server.{role}.__main__") is not None


def test_entrypoint_passes_arguments_through() -> None:
    out = run_entrypoint("--print", "admin", "keys", "create", "--customer", "acme")
    assert shlex.split(out.stdout) == ["python", "-m", "ezthrottle_server.admin", "keys", "create", "--customer", "acme"]


@pytest.mark.parametrize("args", [("bogus",), (), ("--print", "redis")])
def test_entrypoint_refuses_unknown_roles(args: tuple[str, ...]) -> None:
    out = run_entrypoint(*args)
    assert out.returncode == 64
    assert "usage" in out.stderr


def test_entrypoint_really_runs_the_admin_cli() -> None:
    out = run_entrypoint("admin", "--help", env={"EZT_REGIONS_FILE": str(REPO / "regions.yaml")})
    assert out.returncode == 0, out.stderr
    assert "ezthrottle-admin" in out.stdout


def test_entrypoint_really_runs_the_edge_service() -> None:
    # Without EZT_REGION the edge's own settings refuse to start: proof that `edge` ran the edge.
    out = run_entrypoint("edge", env={"EZT_REGIONS_FILE": str(REPO / "regions.yaml")})
    assert out.returncode != 0
    assert "an edge node needs EZT_REGION" in out.stderr


# -- the health check --------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.paths.append(self.path)
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def service() -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def _env(port: int | None) -> dict[str, str]:
    env = {"EZT_REGIONS_FILE": str(REPO / "regions.yaml")}
    if port is not None:
        env["EZT_PORT"] = str(port)
    return env


def test_healthcheck_passes_on_200(service: _Server) -> None:
    assert healthcheck.main([], env=_env(service.port)) == 0
    assert service.paths == ["/healthz"]


def test_healthcheck_fails_on_503(service: _Server) -> None:
    service.status = 503
    assert healthcheck.main([], env=_env(service.port)) == 1


def test_healthcheck_can_ask_readyz(service: _Server) -> None:
    assert healthcheck.main(["--path", "/readyz"], env=_env(service.port)) == 0
    assert service.paths == ["/readyz"]


def test_healthcheck_fails_on_a_closed_port(service: _Server) -> None:
    port = service.port
    service.httpd.shutdown()
    service.httpd.server_close()
    assert healthcheck.main(["--timeout-s", "1"], env=_env(port)) == 1


def test_healthcheck_fails_without_a_port() -> None:
    assert healthcheck.main([], env=_env(None)) == 1


# -- dependencies ------------------------------------------------------------


def _runtime_requirements() -> list[Requirement]:
    import tomllib

    return [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]


def _lock() -> dict[str, str]:
    lines = (DOCKER / "requirements.lock").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def test_floors_are_past_the_known_cves() -> None:
    floors = {"aiohttp": "3.12", "orjson": "3.9.15", "cryptography": "42.0.4"}
    checked = set()
    for req in _runtime_requirements():
        if req.name in floors:
            lowest = min((Version(s.version) for s in req.specifier if s.operator == ">="), default=None)
            assert lowest is not None and lowest >= Version(floors[req.name]), req
            checked.add(req.name)
    assert checked == set(floors)


def test_the_image_installs_from_a_lock_that_pins_every_runtime_dependency(stages: list[list[tuple[str, str]]]) -> None:
    build = stages[0]
    assert any("requirements.lock" in a for a in _args(build, "COPY"))
    assert any("pip install" in a and "--constraint requirements.lock" in a for a in _args(build, "RUN"))
    lock = _lock()
    for req in _runtime_requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not pinned in infra/docker/requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"the lock's {req.name}=={lock[name]} does not satisfy {req}"
    assert lock_module.render().startswith(lock_module.HEADER)

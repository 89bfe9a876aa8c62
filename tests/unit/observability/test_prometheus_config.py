"""infra/prometheus: scrape configs rendered from regions.yaml, alert rules that promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ezthrottle_server.common.config import load_settings
from ezthrottle_server.devcluster.cluster import LocalCluster
from ezthrottle_server.infra import prometheus
from ezthrottle_server.infra.prometheus import ALERTS_FILE, PROMETHEUS_DIR
from unit.observability.helpers import exported_names, names_in

REPO = PROMETHEUS_DIR.parents[1]
COMPOSE = REPO / "infra" / "docker" / "docker-compose.yml"
ISSUE_ALERTS = {
    "region down": "EZThrottleRegionDown",
    "queue age growing": "EZThrottleQueueAgeGrowing",
    "dead letters": "EZThrottleWebhookDeadLetters",
    "quorum misses": "EZThrottleWebhookQuorumMissed",
    "a domain paused for long": "EZThrottleDomainPausedLong",
}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for r in g["rules"]]


def _targets(config: dict[str, Any]) -> dict[str, set[str]]:
    [job] = config["scrape_configs"]
    assert job["job_name"] == "ezthrottle" and job["metrics_path"] == "/metrics"
    return {group["labels"]["component"]: set(group["targets"]) for group in job["static_configs"]}


def test_committed_scrape_configs_are_up_to_date() -> None:
    assert prometheus.main(["--check"]) == 0, "run `python -m ezthrottle_server.infra.prometheus`"


def test_local_config_scrapes_the_ports_of_regions_yaml() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert _targets(config) == {
        "edge": {"127.0.0.1:8701", "127.0.0.1:8702", "127.0.0.1:8703"},
        "coordinator": {"127.0.0.1:8710"},
        "delivery": {"127.0.0.1:8720"},
    }
    assert config["rule_files"] == ["alerts.yml"]  # beside it


def test_compose_config_scrapes_every_compose_service_by_name() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.compose.yml").read_text())
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    expected: dict[str, set[str]] = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if cmd and cmd[0] in ("edge", "coordinator", "delivery"):
            expected.setdefault(cmd[0], set()).add(f"{name}:{svc['environment']['EZT_PORT']}")
    assert _targets(config) == expected
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "../prometheus/prometheus.compose.yml"
    assert mounts["/etc/prometheus/" + config["rule_files"][0]] == "../prometheus/alerts.yml"


def test_up_local_renders_its_own_config_with_the_rules_by_path(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path, REPO / "regions.yaml", env={"EZT_PROMETHEUS_BIN": "/usr/bin/true", "EZT_LOCAL_PROMETHEUS_PORT": "9999"}
    )
    plan = cluster.prometheus_plan(cluster.settings())
    assert plan.proc is not None and plan.proc.ready_url == "http://127.0.0.1:9999/-/ready"
    assert f"--storage.tsdb.path={tmp_path.resolve() / 'prometheus' / 'data'}" in plan.proc.argv
    assert "--web.listen-address=127.0.0.1:9999" in plan.proc.argv
    config = yaml.safe_load(plan.config)
    assert config["rule_files"] == [str(ALERTS_FILE)]
    assert config["global"]["scrape_interval"] == "5s"
    assert _targets(config)["edge"] == {"127.0.0.1:8701", "127.0.0.1:8702", "127.0.0.1:8703"}
    off = LocalCluster(tmp_path, REPO / "regions.yaml", env={"EZT_LOCAL_PROMETHEUS": "0"})
    assert off.prometheus_plan(off.settings()).proc is None
    missing = LocalCluster(tmp_path, REPO / "regions.yaml", env={"PATH": str(tmp_path)})
    plan = missing.prometheus_plan(missing.settings())
    assert plan.proc is None and "apt-get install prometheus" in plan.note


def test_scrape_timeout_never_exceeds_the_interval() -> None:
    settings = load_settings("local", env={}, regions_file=REPO / "regions.yaml")
    for interval in (1, 5, 15, 30):
        g = prometheus.scrape_config(settings, interval_s=interval)["global"]
        assert float(g["scrape_timeout"].rstrip("s")) <= interval


def test_the_alerts_the_issue_asks_for(rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(ISSUE_ALERTS.values()) <= set(names)
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_alert_rules_name_only_metrics_the_services_export(rules: list[dict[str, Any]]) -> None:
    known = exported_names()
    for r in rules:
        names = names_in(r["expr"])
        assert names or "up{" in r["expr"], r["alert"]
        assert names <= set(known), (r["alert"], sorted(names - set(known)))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (it comes with Debian's prometheus package)")
def test_promtool_accepts_configs_and_rules(tmp_path: Path) -> None:
    rules = subprocess.run(["promtool", "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    for name in ("prometheus.yml", "prometheus.compose.yml"):
        config = subprocess.run(["promtool", "check", "config", str(PROMETHEUS_DIR / name)], capture_output=True, text=True)
        assert config.returncode == 0, config.stdout + config.stderr

"""infra/grafana: the committed dashboards are what infra/dashboards.py renders, and they hold together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ezthrottle_server.infra import dashboards
from ezthrottle_server.infra.dashboards import BOARDS, DASHBOARDS_DIR, DATASOURCE_UID, exprs
from unit.observability.helpers import exported_names, names_in

GRAFANA = DASHBOARDS_DIR.parent
COMPOSE = GRAFANA.parents[1] / "infra" / "docker" / "docker-compose.yml"


@pytest.fixture(scope="module")
def committed() -> dict[str, dict[str, Any]]:
    return {b.file: json.loads((DASHBOARDS_DIR / b.file).read_text()) for b in BOARDS}


def test_committed_dashboards_are_up_to_date(tmp_path: Path) -> None:
    """Regenerate into a temp dir and compare byte for byte (run the module to refresh them)."""
    assert dashboards.main(["--out", str(tmp_path)]) == 0
    for board in BOARDS:
        fresh = (tmp_path / board.file).read_text()
        assert (DASHBOARDS_DIR / board.file).read_text() == fresh, (
            f"{board.file} is out of date: run `python -m ezthrottle_server.infra.dashboards`"
        )
    assert dashboards.main(["--check"]) == 0
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(b.file for b in BOARDS), "a stray dashboard file"


def test_check_mode_notices_a_stale_file(tmp_path: Path) -> None:
    assert dashboards.main(["--out", str(tmp_path)]) == 0
    (tmp_path / BOARDS[0].file).write_text("{}\n")
    assert dashboards.main(["--out", str(tmp_path), "--check"]) == 1


def test_the_four_dashboards_of_the_issue(committed: dict[str, dict[str, Any]]) -> None:
    titles = {d["title"] for d in committed.values()}
    assert titles == {
        "EZThrottle / Overview",
        "EZThrottle / Regions and racing",
        "EZThrottle / Target domains and pacing",
        "EZThrottle / Webhook delivery",
    }
    uids = [d["uid"] for d in committed.values()]
    assert len(set(uids)) == len(uids)


def test_panels_are_well_formed(committed: dict[str, dict[str, Any]]) -> None:
    for name, board in committed.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and 0 not in ids, name
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, (name, panel["title"])
            assert panel["targets"] and panel.get("description"), (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs) and all(refs), (name, panel["title"])


def test_every_panel_names_only_metrics_the_services_export(committed: dict[str, dict[str, Any]]) -> None:
    """The offline half of tests/e2e/test_prometheus.py: names checked against the registry."""
    known = exported_names()
    used: set[str] = set()
    for name, board in committed.items():
        for title, expr in exprs(board):
            names = names_in(expr)
            assert names or "up{" in expr, (name, title, expr)  # `up` is Prometheus' own
            assert names <= set(known), (name, title, sorted(names - set(known)))
            used |= names
    # The issue's list, by metric: each has a panel.
    for wanted in (
        "ezt_jobs_submitted_total",
        "ezt_jobs_duplicate_total",
        "ezt_jobs_finished_total",
        "ezt_attempts_total",
        "ezt_attempt_latency_seconds_bucket",
        "ezt_pacing_wait_seconds_bucket",
        "ezt_race_wins_total",
        "ezt_race_losses_total",
        "ezt_queue_depth",
        "ezt_queue_oldest_age_seconds",
        "ezt_delayed_jobs",
        "ezt_domain_rps_limit",
        "ezt_domain_queue_depth",
        "ezt_webhook_deliveries_total",
        "ezt_webhook_quorum_seconds_bucket",
        "ezt_webhook_dead_letters_total",
        "ezt_region_state",
        "ezt_coordinator_leader",
    ):
        assert wanted in used, wanted


def test_counters_are_only_read_through_rate_or_increase(committed: dict[str, dict[str, Any]]) -> None:
    """A raw counter on a dashboard is a restart-shaped sawtooth; histograms need their buckets' rate."""
    known = exported_names()
    allowed_raw = {"ezt_pacing_config_loads_total"}  # a handful of loads: the count itself is the point
    for name, board in committed.items():
        for title, expr in exprs(board):
            for metric in names_in(expr):
                if known[metric] in ("counter", "histogram") and metric not in allowed_raw:
                    assert f"({metric}" in expr.replace(" ", "") and ("rate(" in expr or "increase(" in expr), (name, title, expr)


def test_provisioning_points_at_the_dashboards_and_the_datasource_uid() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    [ds] = source["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ezthrottle.yaml").read_text())
    [p] = provider["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["volumes"]}
    assert mounts[p["options"]["path"]] == "../grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert compose["image"].split(":")[1] == "11.1.0", "the SDK pin in pyproject.toml renders for this Grafana version"

"""Health targets and probe timing: regions.yaml (global, then per region), env, defaults."""

from pathlib import Path

import pytest

from ezthrottle_server.common.config import ConfigError, load_settings

REGIONS = """
profile: local
{top}
regions:
  - id: iad
    port: 8701
{iad}
  - id: lax
    port: 8702
"""


def settings(tmp_path: Path, top: str = "", iad: str = "", env: dict[str, str] | None = None):
    path = tmp_path / "regions.yaml"
    path.write_text(REGIONS.format(top=top, iad=iad))
    return load_settings("edge", env={"EZT_REGION": "iad", **(env or {})}, regions_file=path)


def test_no_targets_by_default_means_the_other_regions_edges(tmp_path):
    s = settings(tmp_path)
    assert s.probe_targets("iad") == () and s.probe_targets("lax") == ()
    assert (s.region_probe_interval_s, s.region_probe_timeout_s) == (0.5, 0.75)
    assert s.test_outbound_fault is False


def test_a_regions_own_list_wins_over_the_global_one(tmp_path):
    s = settings(tmp_path, top="health_targets: [https://a.example/ping]", iad="    health_targets: [http://10.1.0.9:8080/healthz]")
    assert s.probe_targets("iad") == ("http://10.1.0.9:8080/healthz",)
    assert s.probe_targets("lax") == ("https://a.example/ping",)


def test_env_replaces_the_global_list_and_tunes_the_probes(tmp_path):
    env = {
        "EZT_HEALTH_TARGETS": "https://b.example/, https://c.example/",
        "EZT_REGION_PROBE_INTERVAL_S": "0.2",
        "EZT_REGION_PROBE_TIMEOUT_S": "0.7",
    }
    s = settings(tmp_path, top="health_targets: [https://a.example/ping]", env=env)
    assert s.probe_targets("lax") == ("https://b.example/", "https://c.example/")
    assert (s.region_probe_interval_s, s.region_probe_timeout_s) == (0.2, 0.7)


def test_the_fault_switch_cannot_be_set_from_outside(tmp_path):
    s = settings(tmp_path, top="test_outbound_fault: true", env={"EZT_TEST_OUTBOUND_FAULT": "1"})
    assert s.test_outbound_fault is False


@pytest.mark.parametrize(
    ("top", "env"),
    [("health_targets: [ftp://x.example/]", {}), ("health_targets: [x.example]", {}), ("", {"EZT_REGION_PROBE_INTERVAL_S": "0"})],
)
def test_bad_values_are_refused(tmp_path, top, env):
    with pytest.raises(ConfigError):
        settings(tmp_path, top=top, env=env)

"""Outbound and failed-auth settings: regions.yaml ``outbound:``, then env, into the policy."""

from pathlib import Path

import pytest

from ezthrottle_server.common.config import ConfigError, load_settings
from ezthrottle_server.common.outbound import OutboundPolicy

REGIONS = """
profile: {profile}
regions:
  - id: iad
    port: 8701
{extra}
"""


def settings(tmp_path: Path, env: dict[str, str] | None = None, profile: str = "local", extra: str = ""):
    path = tmp_path / "regions.yaml"
    path.write_text(REGIONS.format(profile=profile, extra=extra))
    return load_settings("edge", env={"EZT_REGION": "iad", **(env or {})}, regions_file=path)


def test_loopback_follows_the_profile_unless_set(tmp_path):
    assert settings(tmp_path).allow_loopback_targets is True
    assert settings(tmp_path, profile="production").allow_loopback_targets is False
    assert settings(tmp_path, profile="production", extra="outbound: {allow_loopback: true}").allow_loopback_targets is True
    assert settings(tmp_path, {"EZT_OUTBOUND_ALLOW_LOOPBACK": "0"}).allow_loopback_targets is False
    assert settings(tmp_path, {"EZT_PROFILE": "production"}).allow_loopback_targets is False


def test_allow_lists_from_yaml_and_env(tmp_path):
    s = settings(tmp_path, extra="outbound:\n  allow_cidrs: [10.20.0.0/16, 192.168.1.7]\n  allow_hosts: [Billing.Corp., '*.svc.corp']")
    assert s.outbound_allow_cidrs == ("10.20.0.0/16", "192.168.1.7/32")
    assert s.outbound_allow_hosts == ("billing.corp", "*.svc.corp")
    env = {"EZT_OUTBOUND_ALLOW_CIDRS": "10.30.0.0/16, fd00:1::/64", "EZT_OUTBOUND_ALLOW_HOSTS": "a.corp b.corp"}
    s = settings(tmp_path, env, extra="outbound:\n  allow_cidrs: [10.20.0.0/16]")
    assert s.outbound_allow_cidrs == ("10.30.0.0/16", "fd00:1::/64")  # env wins
    assert s.outbound_allow_hosts == ("a.corp", "b.corp")


def test_the_policy_is_built_from_settings(tmp_path):
    s = settings(tmp_path, {"EZT_OUTBOUND_ALLOW_CIDRS": "10.20.0.0/16", "EZT_OUTBOUND_ALLOW_HOSTS": "*.corp"}, profile="production")
    policy = OutboundPolicy.from_settings(s)
    assert policy.allow_loopback is False
    assert policy.blocked_reason("10.20.1.1") is None and policy.blocked_reason("10.21.1.1") is not None
    policy.check_url("http://billing.corp/")


@pytest.mark.parametrize(
    ("env", "extra"),
    [
        ({"EZT_OUTBOUND_ALLOW_CIDRS": "10.0.0.0/33"}, ""),
        ({"EZT_OUTBOUND_ALLOW_CIDRS": "intranet"}, ""),
        ({"EZT_OUTBOUND_ALLOW_HOSTS": "*"}, ""),
        ({"EZT_OUTBOUND_ALLOW_HOSTS": "10.0.0.5"}, ""),
        ({"EZT_OUTBOUND_ALLOW_LOOPBACK": "maybe"}, ""),
        ({"EZT_TRUSTED_PROXIES": "proxy"}, ""),
        ({"EZT_AUTH_FAIL_LIMIT": "-1"}, ""),
        ({"EZT_AUTH_FAIL_WINDOW_S": "0"}, ""),
        ({"EZT_AUTH_FAIL_LIMIT": "lots"}, ""),
        ({}, "outbound: [10.0.0.0/8]"),
        ({}, "outbound: {allow_cidr: [10.0.0.0/8]}"),
        ({}, "outbound: {allow_cidrs: 10}"),
    ],
)
def test_bad_settings_name_themselves(tmp_path, env, extra):
    with pytest.raises(ConfigError):
        settings(tmp_path, env, extra=extra)


def test_failed_auth_settings(tmp_path):
    s = settings(tmp_path)
    assert (s.auth_fail_limit, s.auth_fail_window_s, s.trusted_proxies) == (20, 60, ())
    s = settings(tmp_path, {"EZT_AUTH_FAIL_LIMIT": "5", "EZT_AUTH_FAIL_WINDOW_S": "300", "EZT_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert (s.auth_fail_limit, s.auth_fail_window_s, s.trusted_proxies) == (5, 300, ("10.0.0.0/8",))

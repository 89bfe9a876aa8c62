"""Domains are host:port, lower-cased; scopes round-trip through the ready set."""

import pytest

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing import OverridesError
from ezthrottle_server.pacing.scope import SHARED, Scope, parse_domain


@pytest.mark.parametrize(
    "url, domain",
    [
        ("https://API.Payments.test/v1/charges", "api.payments.test:443"),
        ("http://api.payments.test/x", "api.payments.test:80"),
        ("https://api.payments.test:8443/x?y=1", "api.payments.test:8443"),
        ("http://127.0.0.1:9/never", "127.0.0.1:9"),
        ("http://[::1]:8080/", "[::1]:8080"),
    ],
)
def test_domain_of(url, domain):
    assert domain_of(url) == domain


def test_same_host_other_port_is_another_domain():
    assert domain_of("http://127.0.0.1:8001/") != domain_of("http://127.0.0.1:8002/")


@pytest.mark.parametrize(
    "text, domain",
    [
        ("api.payments.test:443", "api.payments.test:443"),
        ("API.payments.test", "api.payments.test:443"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("https://x.example/a", "x.example:443"),
        ("[::1]:80", "[::1]:80"),
    ],
)
def test_parse_domain(text, domain):
    assert parse_domain(text) == domain


@pytest.mark.parametrize("bad", ["", "a b", "x/y", "{tag}", "a|b"])
def test_parse_domain_refuses_garbage(bad):
    with pytest.raises(OverridesError):
        parse_domain(bad)


def test_scope_members_round_trip():
    for scope in (Scope("api.x.test:443"), Scope("api.x.test:443", "acme"), Scope("[::1]:80", "a.b-c_d")):
        assert Scope.from_member(scope.member) == scope
    assert Scope("d:1").who == SHARED

"""Domains are host:port, lower-cased; scopes round-trip through the ready set."""

import pytest

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing import OverridesError
from ezthrottle_server.pacing.scope import SHARED, Scope, credential_scope, parse_domain


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


def test_a_credential_scope_is_a_keyed_hash_of_the_authorization_header():
    key = b"k" * 32
    a = credential_scope(key, {"Authorization": "Bearer sk-live-1"})
    assert a.startswith("cred:") and len(a) == 5 + 32 and "sk-live-1" not in a
    assert credential_scope(key, {"authorization": "Bearer sk-live-1", "X-Other": "1"}) == a  # any case, whoever sends it
    assert credential_scope(key, {"Authorization": "Bearer sk-live-2"}) != a
    assert credential_scope(b"x" * 32, {"Authorization": "Bearer sk-live-1"}) != a  # keyed: not a plain hash
    assert credential_scope(key, {"X-Api-Key": "k"}) == credential_scope(key, None) == SHARED
    assert Scope.from_member(Scope("a.example:443", a).member) == Scope("a.example:443", a)

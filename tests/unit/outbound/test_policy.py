"""The outbound policy as a pure function: addresses, spellings, names, allow-lists.

Nothing here opens a socket: every check runs the policy directly.
"""

import ipaddress

import pytest
from yarl import URL

from ezthrottle_server.common.errors import OutboundBlocked
from ezthrottle_server.common.outbound import OutboundPolicy, parse_host_address

PRODUCTION = OutboundPolicy()
LOCAL = OutboundPolicy(allow_loopback=True)


def refusal(policy: OutboundPolicy, url: str) -> str:
    with pytest.raises(OutboundBlocked) as info:
        policy.check_url(url)
    return str(info.value)


# -- addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.255", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.10", "documentation"),
        ("203.0.113.10", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.0.8", "IETF"),
        ("2001::1", "Teredo"),
        ("64:ff9b:1::1", "NAT64"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        # IPv6 carrying an IPv4 address is judged by the IPv4 address
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("::10.1.2.3", "private"),
        ("64:ff9b::10.0.0.1", "private"),  # NAT64 well-known prefix
        ("64:ff9b::169.254.169.254", "metadata"),
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_with_their_reason(addr, reason):
    got = PRODUCTION.blocked_reason(addr)
    assert got is not None and reason.lower() in got.lower(), got
    with pytest.raises(OutboundBlocked, match=reason):
        PRODUCTION.check_address(ipaddress.ip_address(addr))


@pytest.mark.parametrize(
    "addr",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"],
)
def test_public_addresses_pass(addr):
    assert PRODUCTION.blocked_reason(addr) is None
    PRODUCTION.check_address(addr)


def test_the_local_profile_allows_loopback_and_nothing_else():
    for addr in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert LOCAL.blocked_reason(addr) is None
    for addr in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0", "fe80::1"):
        assert LOCAL.blocked_reason(addr) is not None


# -- spellings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # decimal
        "017700000001",  # octal, one part
        "0177.0.0.1",  # octal parts
        "0177.0.0.01",
        "0x7f.0.0.1",  # hex parts
        "0x7F.0x0.0x0.0x1",
        "0x7f000001",  # hex, one part
        "127.1",  # short forms
        "127.0.1",
        "0x7f.1",
        "127.000.000.001",  # zero-padded
        "127.0.0.1.",  # trailing dot
    ],
)
def test_legacy_ipv4_spellings_mean_the_address_they_spell(host):
    addr, canonical = parse_host_address(host)
    assert addr == ipaddress.ip_address("127.0.0.1") and not canonical


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0X7F.0.0.1/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://127.000.000.001/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[::1]/",
        "http://①②⑦.0.0.1/",  # yarl folds these digits (NFKC) to 127.0.0.1
        "http://１２７.0.0.1/",  # noqa: RUF001 - fullwidth digits, on purpose
        "http://127。0。0。1/",
        "http://0/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://localhost/",
        "http://LOCALHOST/",
        "http://localhost./",
        "http://LocalHost.:8080/",
        "http://api.localhost/",
        "http://localhost.localdomain/",
    ],
)
def test_loopback_in_any_spelling_is_refused_in_production(url):
    refusal(PRODUCTION, url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://2852039166/", "metadata"),  # 169.254.169.254 in decimal
        ("http://0xa9.0xfe.0xa9.0xfe/", "metadata"),
        ("http://0251.0376.0251.0376/", "metadata"),
        ("http://169.254.43518/", "metadata"),
        ("http://[::ffff:a9fe:a9fe]/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA.GOOGLE.INTERNAL./", "metadata"),
        ("http://metadata/", "metadata"),
        ("http://instance-data/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://012.0.0.1/", "private"),  # octal 012 = 10
        ("http://0xa000001/", "private"),
        ("http://167772161/", "private"),
        ("http://192.168.1.1:8080/admin", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://[64:ff9b::a00:1]/", "private"),
        ("http://100.64.1.1/", "CGNAT"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://224.0.0.251/", "multicast"),
    ],
)
def test_other_non_public_targets_are_refused_whatever_the_spelling(url, reason):
    assert reason.lower() in refusal(PRODUCTION, url).lower()
    assert reason.lower() in refusal(LOCAL, url).lower()  # loopback allowance changes nothing here


@pytest.mark.parametrize("url", ["http://134744072/", "http://0x8.0x8.0x8.0x8/", "http://8.8.8.8./", "http://8.8.2056/"])
def test_non_canonical_spellings_of_public_addresses_are_refused_too(url):
    # Parsers disagree about these (aiohttp refuses some at connect time, getaddrinfo
    # accepts them), so the answer is a clear refusal naming the canonical form.
    assert "8.8.8.8" in refusal(PRODUCTION, url)


def test_local_profile_accepts_canonical_loopback_only():
    LOCAL.check_url("http://127.0.0.1:8080/x")
    LOCAL.check_url("http://[::1]:8080/x")
    LOCAL.check_url("http://localhost:8080/x")
    assert "non-canonical" in refusal(LOCAL, "http://0x7f.0.0.1:8080/")
    assert "non-canonical" in refusal(LOCAL, "http://2130706433:8080/")


def test_the_host_judged_is_the_one_yarl_connects_to():
    # userinfo and fragments do not change the host
    assert PRODUCTION.check_url("http://127.0.0.1:80@site.example/").host == "site.example"
    assert PRODUCTION.check_url("http://site.example#@127.0.0.1/").host == "site.example"
    refusal(PRODUCTION, "http://site.example@127.0.0.1/")


# -- names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://intranet/", "single-label"),
        ("http://redis:6379/", "single-label"),
        ("http://billing.internal/", ".internal"),
        ("http://printer.local/", ".local"),
        ("http://nas.home.arpa/", ".home.arpa"),
        ("http://box.lan/", ".lan"),
        ("http://svc.corp/", ".corp"),
        ("http://1.2.3.4.5/", "numeric"),
        ("http://4294967296/", "numeric"),
        ("http://a.0x10/", "numeric"),
    ],
)
def test_special_use_names_are_refused(url, reason):
    assert reason in refusal(PRODUCTION, url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.payments.test/v1/charges",
        "http://site.example./",
        "http://SITE.example/",
        "https://x.test/",
        "http://cafe.bead/",
        "http://8.8.8.8/",
    ],
)
def test_public_names_and_addresses_pass(url):
    assert PRODUCTION.check_url(url) == URL(url)


@pytest.mark.parametrize("url", ["ftp://site.example/", "file:///etc/passwd", "gopher://site.example/", "http:///nohost"])
def test_only_http_and_https_with_a_host(url):
    refusal(PRODUCTION, url)


# -- allow-lists ---------------------------------------------------------------


def test_allowed_networks_open_only_themselves():
    policy = OutboundPolicy(allow_cidrs=("10.20.0.0/16", "fd00:1::/64"))
    for ok in ("10.20.0.1", "10.20.255.255", "::ffff:10.20.1.1", "fd00:1::5"):
        assert policy.blocked_reason(ok) is None, ok
    for bad in ("10.21.0.1", "127.0.0.1", "192.168.0.1", "fd00:2::5"):
        assert policy.blocked_reason(bad) is not None, bad
    policy.check_url("http://10.20.3.4:8443/hook")
    refusal(policy, "http://10.21.3.4/")
    refusal(policy, "http://0xa.20.3.4/")  # allowed address, non-canonical spelling


def test_metadata_needs_its_exact_address_on_the_allow_list():
    wide = OutboundPolicy(allow_cidrs=("169.254.0.0/16", "0.0.0.0/0"))
    assert wide.blocked_reason("169.254.169.254") is not None
    assert wide.blocked_reason("169.254.1.1") is None
    exact = OutboundPolicy(allow_cidrs=("169.254.169.254/32",))
    assert exact.blocked_reason("169.254.169.254") is None
    assert exact.blocked_reason("::ffff:169.254.169.254") is None


def test_loopback_can_be_allowed_by_network_without_the_local_profile():
    policy = OutboundPolicy(allow_cidrs=("127.0.0.1/32",))
    assert policy.blocked_reason("127.0.0.1") is None
    assert policy.blocked_reason("127.0.0.2") == "loopback"
    refusal(policy, "http://localhost/")  # names are not addresses: allow_loopback or allow_hosts


def test_allowed_hosts_lift_the_name_rules_only():
    policy = OutboundPolicy(allow_hosts=("billing.internal", "*.svc.corp", "redis"))
    policy.check_url("http://billing.internal/")
    policy.check_url("http://BILLING.internal./")
    policy.check_url("http://a.b.svc.corp/")
    policy.check_url("http://redis:6379/")
    refusal(policy, "http://svc.corp/")  # "*.svc.corp" means subdomains only
    refusal(policy, "http://other.internal/")
    refusal(policy, "http://10.0.0.1/")  # addresses still need allow_cidrs


@pytest.mark.parametrize("bad", [("not-a-cidr",), ("10.0.0.0/33",)])
def test_bad_cidrs_are_rejected(bad):
    with pytest.raises(ValueError):
        OutboundPolicy(allow_cidrs=bad)


@pytest.mark.parametrize("bad", [("",), ("*",), ("a*.b",), ("x/y",), ("10.0.0.5",), ("0x7f.1",)])
def test_bad_host_patterns_are_rejected(bad):
    with pytest.raises(ValueError):
        OutboundPolicy(allow_hosts=bad)

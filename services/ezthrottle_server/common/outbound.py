"""Outbound policy: which destinations the dam may send to.

A service that sends HTTP requests on other people's behalf must not become an
open relay into its own network. The policy answers one question, "may we
send there?", at three points, and all three ask the same
:class:`OutboundPolicy`:

1. **Submit** (and every redirect hop): :meth:`OutboundPolicy.check_url`
   refuses a bad scheme, a special-use host name, and a literal address that
   is not public, whatever its spelling.
2. **DNS resolution**: :class:`PolicyResolver` wraps aiohttp's resolver and
   refuses a name if any address it resolves to is not allowed, so a name
   that points (or re-points: DNS rebinding) at a private address is refused
   before a socket exists.
3. **Connect**: the connector's socket factory checks the very address each
   socket is about to connect to, literal or resolved. It is the last word.

:func:`make_connector` builds an ``aiohttp.TCPConnector`` with 2 and 3 wired
in; every outbound session (executor, webhook delivery) uses one. It also
counts requests and the new connections they needed, by ``kind``
(``ezt_outbound_requests_total``, ``ezt_outbound_connections_opened_total``):
pooled connections are reused, and the two counters show how well. Whatever
is refused raises :class:`~ezthrottle_server.common.errors.OutboundBlocked`
(never an ``OSError``, so it is not mistaken for a connection failure and
rerouted); nothing has been sent when it is raised.

Refused by default:

- addresses: loopback, private (RFC 1918, ULA), link-local, CGNAT
  (100.64/10), multicast, unspecified, broadcast, reserved, documentation and
  benchmarking ranges, IETF protocol assignments, Teredo, local-use NAT64,
  and cloud metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...).
  IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4
  ``2002:AABB:CCDD::``) are judged by the IPv4 address they carry.
- host spellings: IPv4 written any way but dotted-quad (``2130706433``,
  ``0177.0.0.1``, ``0x7f.0.0.1``, ``127.1``, a trailing dot). Parsers disagree
  about these, so we refuse them outright and say how to write the address.
- host names: ``localhost`` and ``*.localhost``, cloud metadata names
  (``metadata.google.internal``, ...), single-label names (they resolve
  through the node's search domains, i.e. to internal hosts) and private-use
  suffixes (``.internal``, ``.local``, ``.home.arpa``, ...).

Ports: the production profile sends to 80 and 443 only, plus the ports
listed in ``outbound.allowed_ports`` / ``EZT_OUTBOUND_ALLOWED_PORTS``, so a
job cannot aim at a public host's Redis or Docker port; the local profile
sends to any port (its targets are loopback servers on random ports).

What a customer reads of a refusal (``str()`` of the exception: a job's
attempt error, a webhook's last error) names the host and the kind of address
("host 'api.test' resolves to a private (RFC 1918) address"), never an address
a name resolved to: that would map the network behind the dam. The address is
in the exception's ``detail`` and in a WARNING log line, for operators.

Allow-lists (from config, see :meth:`OutboundPolicy.from_settings`):

- ``allow_loopback``: loopback addresses and ``localhost`` names (the local
  profile sets it).
- ``allow_cidrs``: networks that may be reached although they are not
  public. A metadata address is allowed only by an entry for exactly that
  address (a /32 or /128), never by a wider network that happens to hold it.
- ``allow_hosts``: names (``billing.corp``) or suffix patterns
  (``*.corp.example``) exempt from the name rules. The addresses such a name
  resolves to must still pass the address rules: allow their network too.
  A name is not trusted to point wherever it likes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .errors import OutboundBlocked
from .metrics import OUTBOUND_CONNECTIONS_OPENED, OUTBOUND_REFUSED, OUTBOUND_REQUESTS

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
PRODUCTION_PORTS = frozenset({80, 443})  # plus settings.outbound_allowed_ports

# Reasons, as they appear in messages ("address 10.0.0.1 is private").
LOOPBACK = "loopback"
METADATA = "a cloud metadata address"

_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Ordered: the first network holding an address names the reason.
_BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_V4("127.0.0.0/8"), LOOPBACK),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "reserved for IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "reserved for documentation"),
    (_V4("192.88.99.0/24"), "the deprecated 6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "reserved for benchmarking"),
    (_V4("198.51.100.0/24"), "reserved for documentation"),
    (_V4("203.0.113.0/24"), "reserved for documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), LOOPBACK),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/32"), "Teredo"),
    (_V6("2001:2::/48"), "reserved for benchmarking"),
    (_V6("2001:db8::/32"), "reserved for documentation"),
    (_V6("2001::/23"), "reserved for IETF protocol assignments"),
    (_V6("3fff::/20"), "reserved for documentation"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)

_NAT64 = _V6("64:ff9b::/96")
_IPV4_COMPATIBLE = _V6("::/96")

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
# Suffixes that never name a public host (RFC 6761, RFC 6762 appendix G, RFC 8375, ICANN .internal).
_PRIVATE_SUFFIXES = ("internal", "local", "localdomain", "home.arpa", "lan", "intranet", "corp", "home", "private")

# Refusals by the socket factory during one connect (see PolicyConnector.connect): (address, reason).
_refusals: ContextVar[list[tuple[IPAddress, str]] | None] = ContextVar("ezt_outbound_refusals", default=None)

# Characters of a legacy numeric IPv4 spelling (decimal, octal, hex parts).
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_ALLOWED_HOSTS_MEMO = 4096  # hosts remembered as allowed, per policy (cleared when full)


def parse_host_address(host: str) -> tuple[IPAddress | None, bool]:
    """The address a URL host spells, if it spells one, and whether the spelling is canonical.

    ``("127.0.0.1")`` -> ``(127.0.0.1, True)``; ``("0x7f.1")`` and
    ``("2130706433")`` -> ``(127.0.0.1, False)``; ``("example.com")`` ->
    ``(None, True)``. Legacy spellings are read with :func:`socket.inet_aton`,
    which is what ``getaddrinfo`` (and so a connect) does with them.
    """
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    canonical = True
    if h.endswith("."):
        h = h.rstrip(".")
        canonical = False
    try:
        return ipaddress.ip_address(h), canonical
    except ValueError:
        pass
    if h and _NUMERIC_HOST.fullmatch(h) and h.strip("."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h)), False
        except OSError:
            pass
    return None, True


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _parse_networks(cidrs: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for c in cidrs:
        if isinstance(c, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            out.append(c)
            continue
        try:
            out.append(ipaddress.ip_network(str(c).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not a CIDR: {c!r}") from exc
    return tuple(out)


def _parse_host_patterns(hosts: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for h in hosts:
        n = _normalise_host(h)
        if n.startswith("*."):
            n = n[1:]  # "*.corp.example" -> ".corp.example": any subdomain
        if not n or n == "." or "*" in n or "/" in n:
            raise ValueError(f"not a host name or '*.suffix' pattern: {h!r}")
        if parse_host_address(n)[0] is not None:
            raise ValueError(f"{h!r} is an address, not a host name; allow it as a network (allow_cidrs)")
        out.append(n)
    return tuple(out)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which destinations the dam may send to. Immutable; safe to share."""

    allow_loopback: bool = False
    allow_cidrs: tuple[IPNetwork, ...] = field(default=())
    allow_hosts: tuple[str, ...] = field(default=())
    allowed_ports: frozenset[int] | None = None  # None: any port
    # Hosts already judged allowed (a memo of check_host, a pure function of
    # the policy and the host): every send and submission checks its URL.
    _allowed: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_cidrs", _parse_networks(self.allow_cidrs))
        object.__setattr__(self, "allow_hosts", _parse_host_patterns(self.allow_hosts))
        if self.allowed_ports is not None:
            object.__setattr__(self, "allowed_ports", frozenset(self.allowed_ports))

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """The policy of ``settings``; the local profile allows any port, production 80, 443 and the listed ones."""
        ports = None if settings.profile == "local" else PRODUCTION_PORTS | frozenset(settings.outbound_allowed_ports)
        return cls(
            allow_loopback=settings.allow_loopback_targets,
            allow_cidrs=_parse_networks(settings.outbound_allow_cidrs),
            allow_hosts=tuple(settings.outbound_allow_hosts),
            allowed_ports=ports,
        )

    # -- URLs and host names -------------------------------------------------

    def check_url(self, url: str | URL) -> URL:
        """Return the parsed URL, or raise OutboundBlocked naming the reason.

        Judges what the URL says (scheme, host name, literal address, port);
        the addresses a name resolves to are judged at connect time.
        """
        try:
            return self._check_url(url)
        except OutboundBlocked:
            OUTBOUND_REFUSED.labels("url").inc()
            raise

    def _check_url(self, url: str | URL) -> URL:
        try:
            u = url if isinstance(url, URL) else URL(url)
            host = u.host or ""  # decodes IDNA, which can fail (UnicodeError, a ValueError)
        except (ValueError, TypeError) as exc:
            raise OutboundBlocked(f"not a valid URL: {exc}") from None
        if u.scheme not in ALLOWED_SCHEMES:
            raise OutboundBlocked(f"scheme {u.scheme!r} is not allowed; use http or https")
        if not host:
            raise OutboundBlocked("URL has no host")
        self.check_host(host)
        if u.raw_host and u.raw_host != host:
            self.check_host(u.raw_host)  # what the connector will actually use
        if self.allowed_ports is not None and u.port not in self.allowed_ports:
            allowed = ", ".join(str(p) for p in sorted(self.allowed_ports))
            raise OutboundBlocked(f"port {u.port} is not allowed (allowed: {allowed})")
        return u

    def check_host(self, host: str) -> None:
        """Judge a URL host: a literal address (any spelling) or a name."""
        if host in self._allowed:
            return
        self._judge_host(host)
        if len(self._allowed) >= _ALLOWED_HOSTS_MEMO:
            self._allowed.clear()
        self._allowed[host] = True

    def _judge_host(self, host: str) -> None:
        addr, canonical = parse_host_address(host)
        if addr is not None:
            reason = self.blocked_reason(addr)
            if reason is not None:
                spelled = f"address {addr}" if canonical else f"host {host!r} spells the address {addr}, which"
                raise OutboundBlocked(f"{spelled} is {reason}")
            if not canonical:
                raise OutboundBlocked(f"host {host!r} is a non-canonical spelling of the address {addr}; write {addr}")
            return
        name = _normalise_host(host)
        if not name:
            raise OutboundBlocked("URL has no host")
        last_label = name.rsplit(".", 1)[-1]
        if last_label.isdigit() or (_NUMERIC_HOST.fullmatch(name) and last_label.startswith("0x")):
            raise OutboundBlocked(f"host {host!r} looks like a numeric address but is not one")
        if self._host_allowed(name):
            return
        if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            if self.allow_loopback:
                return
            raise OutboundBlocked(f"host {host!r} is {LOOPBACK}")
        if name in _METADATA_NAMES:
            raise OutboundBlocked(f"host {host!r} is {METADATA}")
        if "." not in name:
            raise OutboundBlocked(
                f"host {host!r} is a single-label name, resolved through the node's search domains; use a fully qualified name"
            )
        for suffix in _PRIVATE_SUFFIXES:
            if name == suffix or name.endswith("." + suffix):
                raise OutboundBlocked(f"host {host!r} is under the private-use domain .{suffix}")

    def _host_allowed(self, name: str) -> bool:
        return any(name == pattern or (pattern.startswith(".") and name.endswith(pattern)) for pattern in self.allow_hosts)

    # -- addresses -----------------------------------------------------------

    def blocked_reason(self, addr: IPAddress | str) -> str | None:
        """Why ``addr`` may not be sent to (e.g. ``"loopback"``), or None if it may.

        An IPv6 address that carries an IPv4 address is judged by the IPv4
        address; the allow-list may name either.
        """
        refusal = self._refusal(addr)
        if refusal is None:
            return None
        reason, carried = refusal
        return reason if carried is None else f"{reason} (it carries the IPv4 address {carried})"

    def _refusal(self, addr: IPAddress | str) -> tuple[str, ipaddress.IPv4Address | None] | None:
        """The reason ``addr`` is refused, and the IPv4 address it carries if that was judged; None if allowed."""
        a = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
        v4: ipaddress.IPv4Address | None = None
        if isinstance(a, ipaddress.IPv6Address):
            a = ipaddress.IPv6Address(int(a))  # drop any %scope
            v4 = _embedded_ipv4(a)
        judged: IPAddress = v4 if v4 is not None else a
        candidates = (a, judged)
        if any(c in _METADATA_ADDRESSES for c in candidates):
            exact = any(n.num_addresses == 1 and c in n for c in candidates for n in self.allow_cidrs)
            return None if exact else (METADATA, None)
        if any(c in n for c in candidates for n in self.allow_cidrs):
            return None
        reason = _address_reason(judged)
        if reason is None or (reason == LOOPBACK and self.allow_loopback):
            return None
        return reason, (None if judged is a else v4)

    def check_address(self, addr: IPAddress | str) -> None:
        """Judge an address the customer wrote (a literal in a URL): the message names it."""
        reason = self.blocked_reason(addr)
        if reason is not None:
            raise OutboundBlocked(f"address {addr} is {reason}")

    def check_resolved(self, host: str, addr: IPAddress | str) -> None:
        """Judge an address the name ``host`` resolved to.

        The refusal names the host and the kind of address, never the address:
        that goes to ``detail`` and to the log, for operators only.
        """
        refusal = self._refusal(addr)
        if refusal is None:
            return
        reason, _carried = refusal
        detail = f"host {host!r} resolves to {addr}, which is {self.blocked_reason(addr)}"
        log.warning("outbound refused: %s", detail, extra={"domain": host, "reason": reason})
        raise OutboundBlocked(f"host {host!r} resolves to {_kind_of_address(reason)}", detail=detail)


# A socket address in an OSError's text: "Connect call failed ('10.1.2.3', 443)" (asyncio), IPv6 with flow and scope.
_SOCKET_ADDRESS = re.compile(r" ?\('[^']*', \d+(?:, \d+, \d+)?\)")


def connect_error_text(exc: BaseException) -> str:
    """``Type: message`` of a failed send, for customers: without the socket
    addresses a name resolved to ("Connect call failed ('10.1.2.3', 443)" reads
    "Connect call failed"). An allow-listed internal host stays unmapped."""
    return _SOCKET_ADDRESS.sub("", f"{type(exc).__name__}: {exc}")


def _kind_of_address(reason: str) -> str:
    """``"loopback"`` -> ``"a loopback address"``; a reason that is no adjective -> ``"an address that is ..."``."""
    if reason == METADATA:
        return reason
    if reason == "not a global address":
        return "an address that is not global"
    if reason.startswith(("reserved for", "the ", "shared", "unspecified (")):
        return f"an address that is {reason}"
    return f"{'an' if reason[0] in 'aeiou' else 'a'} {reason} address"


def _address_reason(a: IPAddress) -> str | None:
    for net, reason in _BLOCKED_NETWORKS:
        if a.version == net.version and a in net:
            return reason
    if a.is_multicast:
        return "multicast"
    if not a.is_global:
        return "not a global address"
    return None


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that refuses names the policy does not allow.

    Judges the name, resolves it with ``inner`` (aiohttp's default resolver
    unless given), and raises OutboundBlocked if ANY resolved address is not
    allowed: a name that mixes public and private answers is suspect. Because
    the connector caches what this returns, cached answers are checked ones.
    """

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._owns_inner = inner is None
        self.inner: AbstractResolver = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            self.policy.check_host(host)
        except OutboundBlocked:
            OUTBOUND_REFUSED.labels("dns").inc()
            raise
        results = await self.inner.resolve(host, port, family)
        for r in results:
            try:
                self.policy.check_resolved(host, ipaddress.ip_address(r["host"]))
            except OutboundBlocked:
                OUTBOUND_REFUSED.labels("dns").inc()
                raise
        return results

    async def close(self) -> None:
        if self._owns_inner:
            await self.inner.close()


class PolicyConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every connect passes the outbound policy.

    Names go through :class:`PolicyResolver`; the socket factory checks the
    address of every socket before it exists (IP literals never reach a
    resolver). A refusal always surfaces from :meth:`connect` as
    OutboundBlocked, even where aiohttp or happy eyeballs would wrap it.
    """

    def __init__(self, policy: OutboundPolicy, *, resolver: AbstractResolver | None = None, kind: str = "other", **kwargs: Any) -> None:
        if "socket_factory" in kwargs:
            raise TypeError("PolicyConnector sets its own socket_factory")
        self.policy = policy
        self._requests = OUTBOUND_REQUESTS.labels(kind)
        self._opened = OUTBOUND_CONNECTIONS_OPENED.labels(kind)
        self._policy_resolver = PolicyResolver(policy, resolver)
        super().__init__(resolver=self._policy_resolver, socket_factory=self._guarded_socket, **kwargs)

    def _guarded_socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        addr = ipaddress.ip_address(sockaddr[0])
        reason = self.policy.blocked_reason(addr)
        if reason is not None:
            refusals = _refusals.get()
            if refusals is not None:
                refusals.append((addr, reason))
            raise OutboundBlocked(f"address {addr} is {reason}")
        return socket.socket(family=family, type=type_, proto=proto)

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        self._opened.inc()  # none in the pool for this origin: a new one
        return proto

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        self._requests.inc()
        refusals: list[tuple[IPAddress, str]] = []
        token = _refusals.set(refusals)
        try:
            return await super().connect(req, traces, timeout)
        except Exception as exc:
            if not refusals:  # the resolver's refusals are counted (and worded) there
                raise
            OUTBOUND_REFUSED.labels("connect").inc()
            raise self._refused(req.host, refusals[0][0]) from exc
        finally:
            _refusals.reset(token)

    def _refused(self, host: str, addr: IPAddress) -> OutboundBlocked:
        """The socket factory's refusal, worded for the customer: an address they wrote, or the kind their name resolved to."""
        written = parse_host_address(host)[0]
        if written is not None:  # a literal in the URL: the customer knows the address
            return OutboundBlocked(f"address {written} is {self.policy.blocked_reason(addr)}")
        try:
            self.policy.check_resolved(host, addr)
        except OutboundBlocked as exc:
            return exc
        return OutboundBlocked(f"host {host!r} resolves to an address that is not allowed", detail=f"address {addr}")

    async def close(self, **kwargs: Any) -> None:
        try:
            await super().close(**kwargs)
        finally:
            await self._policy_resolver.close()


# Every outbound session's: no cap per host (the sender's own limit bounds it), DNS answers kept
# 30 s, connections a peer left half-closed cleaned up.
CONNECTOR_DEFAULTS: dict[str, Any] = {"limit_per_host": 0, "ttl_dns_cache": 30, "enable_cleanup_closed": True}


def make_connector(
    policy: OutboundPolicy, *, resolver: AbstractResolver | None = None, kind: str = "other", **kwargs: Any
) -> PolicyConnector:
    """The connector for every outbound session: DNS answers and connect addresses pass ``policy``.

    ``kind`` labels its requests and new connections in the metrics: ``target`` (jobs' sends),
    ``webhook``, or ``other``.

    ``kwargs`` go to :class:`aiohttp.TCPConnector` (``limit``, ``ttl_dns_cache``, ...), over
    :data:`CONNECTOR_DEFAULTS`. ``resolver`` replaces aiohttp's default resolver underneath
    the policy (tests use it to answer names without DNS). Call inside a running loop.
    """
    return PolicyConnector(policy, resolver=resolver, kind=kind, **{**CONNECTOR_DEFAULTS, **kwargs})

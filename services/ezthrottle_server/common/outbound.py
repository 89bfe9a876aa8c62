"""Outbound policy: which destinations the dam may send to.

Every target URL and webhook URL passes :func:`check_url` at submit time and
again on every redirect hop. The hardening work extends this module (DNS
resolution checks at connect time); callers only ever ask it one question.

The local profile (``make up-local`` and the tests) allows loopback targets;
production refuses loopback, private, link-local and metadata addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from yarl import URL

from .errors import OutboundBlocked

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


@dataclass(frozen=True)
class OutboundPolicy:
    allow_loopback: bool = False

    def check_url(self, url: str | URL) -> URL:
        """Return the parsed URL, or raise OutboundBlocked naming the reason."""
        u = url if isinstance(url, URL) else URL(url)
        if u.scheme not in ("http", "https"):
            raise OutboundBlocked(f"scheme {u.scheme!r} is not allowed")
        host = u.host or ""
        if not host:
            raise OutboundBlocked("URL has no host")
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host.lower() in ("localhost", "localhost.localdomain") and not self.allow_loopback:
                raise OutboundBlocked(f"host {host!r} is loopback") from None
            return u
        self.check_address(addr)
        return u

    def check_address(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if addr in _METADATA:
            raise OutboundBlocked(f"address {addr} is a cloud metadata address")
        if addr.is_loopback:
            if self.allow_loopback:
                return
            raise OutboundBlocked(f"address {addr} is loopback")
        if addr.is_private or addr.is_link_local or addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            raise OutboundBlocked(f"address {addr} is not a public address")

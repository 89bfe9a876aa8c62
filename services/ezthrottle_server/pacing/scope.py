"""What one limit governs: a target domain, or one customer's use of it."""

from __future__ import annotations

from dataclasses import dataclass

from ..common import keys
from ..common.urls import domain_of
from . import OverridesError

SHARED = keys.SHARED_SCOPE  # the scope of a domain whose customers share one limit


def parse_domain(text: str) -> str:
    """A domain as an operator writes it: a URL, ``host:port`` or a bare host (port 443)."""
    text = text.strip()
    if "://" in text:
        return domain_of(text)
    if not text or any(c in text for c in "/{}| \t"):
        raise OverridesError(f"{text!r} is not a domain (write host:port, e.g. api.stripe.com:443)")
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and (not host.count(":") or host.endswith("]")):
        return domain_of(f"https://{host}:{port}")
    return domain_of(f"https://{text}")


@dataclass(frozen=True)
class Scope:
    domain: str
    who: str = SHARED  # SHARED or a customer id

    @property
    def member(self) -> str:
        """How the scope appears in a region's ready set."""
        return keys.pacing_ready_member(self.domain, self.who)

    @classmethod
    def from_member(cls, member: str) -> Scope:
        domain, _, who = member.rpartition("|")
        return cls(domain, who)

    def __str__(self) -> str:
        return self.domain if self.who == SHARED else f"{self.domain} (customer {self.who})"

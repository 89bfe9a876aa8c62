"""What one limit governs: a target domain, one customer's use of it, or one credential's.

A domain's mode (``domains.yaml``) says which:

- ``shared`` (the default): one limit for every job to the domain;
- ``customer`` (``per_customer: true``): one limit per customer;
- ``credential`` (``scope: credential``): one limit per value of the job's
  ``Authorization`` header, as an API that counts per API key does. Two
  customers who send the same credential share its limit (the target counts
  them together); jobs without the header share the domain's.

A credential's scope is named by a keyed hash of the header (HMAC-SHA256 with
a random key the deployment creates once in Redis, ``cred:`` and 32 hex
digits), never by the header itself: the name shows in Redis key names,
``ezthrottle-admin domains show`` and logs, where a plain hash of a short API
key could be reversed by guessing. The key lives in Redis rather than in
``EZT_SECRETS_KEYS`` so that rotating those keys never splits a credential's
limit in two; whoever reads that Redis reads the job specs anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common import keys
from ..common.urls import domain_of
from . import OverridesError

SHARED = keys.SHARED_SCOPE  # the scope of a domain whose customers share one limit
CREDENTIAL_PREFIX = keys.CREDENTIAL_SCOPE_PREFIX  # the scope of one credential: this, then a keyed hash of its header
credential_scope = keys.credential_scope

SHARED_MODE, CUSTOMER_MODE, CREDENTIAL_MODE = "shared", "customer", "credential"


def mode_of(per_customer: str | None, scope: str | None) -> str:
    """A domain's mode from its conf hash's ``per_customer`` and ``scope`` fields."""
    if scope == CREDENTIAL_MODE:
        return CREDENTIAL_MODE
    return CUSTOMER_MODE if per_customer == "1" else SHARED_MODE


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
        if self.who == SHARED:
            return self.domain
        if self.who.startswith(CREDENTIAL_PREFIX):
            return f"{self.domain} (credential {self.who})"
        return f"{self.domain} (customer {self.who})"

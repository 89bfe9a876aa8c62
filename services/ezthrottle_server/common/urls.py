"""URL helpers every service shares."""

from __future__ import annotations

from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}


def domain_of(url: str | URL) -> str:
    """``host:port`` of a URL, lower-cased, without a trailing dot, the port always written
    (the scheme's default when left out): one name, one limit.

    >>> domain_of("https://API.Stripe.com./v1/charges")
    'api.stripe.com:443'
    """
    u = url if isinstance(url, URL) else URL(url)
    host = (u.raw_host or "").lower().rstrip(".")  # "api.stripe.com." is the same name, fully qualified
    if not host:
        raise ValueError(f"URL {str(u)!r} has no host")
    port = u.port or _DEFAULT_PORTS.get(u.scheme, 0)
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{port}"

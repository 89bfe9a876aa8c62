"""URL helpers every service shares."""

from __future__ import annotations

import functools

from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}


def domain_of(url: str | URL) -> str:
    """``host:port`` of a URL, lower-cased, without a trailing dot, the port always written
    (the scheme's default when left out): one name, one limit.

    >>> domain_of("https://API.Stripe.com./v1/charges")
    'api.stripe.com:443'
    """
    return _domain(url) if isinstance(url, URL) else _domain_of_text(url)


@functools.lru_cache(maxsize=1024)  # a URL's domain is asked for several times on one job's (or webhook's) path; URLs may be long
def _domain_of_text(url: str) -> str:
    return _domain(URL(url))


@functools.lru_cache(maxsize=1024)
def host_of(url: str) -> str | None:
    """The host of a URL as yarl reads it (IDNA decoded, IPv6 without brackets)."""
    return URL(url).host


def _domain(u: URL) -> str:
    host = (u.raw_host or "").lower().rstrip(".")  # "api.stripe.com." is the same name, fully qualified
    if not host:
        raise ValueError(f"URL {str(u)!r} has no host")
    port = u.port or _DEFAULT_PORTS.get(u.scheme, 0)
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{port}"

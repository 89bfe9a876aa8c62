"""Which edge to talk to: the nearest healthy one, and the next one on failure.

No I/O here: the clients probe (``GET /healthz``, timed) and discover
(``GET /api/v1/regions``), and this module keeps the order.

- The URLs come from ``base_url`` (a string, a comma-separated string or a
  list), else ``$EZTHROTTLE_URL`` (comma-separated), else the default.
- With ``discover_edges=True`` the edges that ``/api/v1/regions`` lists for
  regions that are not down join them, except those an answer should not be
  able to send the client (and its Bearer key) to: an edge whose scheme
  differs from the base URL's (no https to http downgrade), and an
  unspecified (``0.0.0.0``, ``::``) or loopback host unless the base itself
  is loopback.
- With more than one edge, each is probed: healthy edges first, fastest
  first; unreachable ones last, in the order given. Probes are repeated every
  ``REFRESH_S`` seconds.
- An edge that fails to connect goes to the back of the line at once, so the
  retry of the same request (same payload, same idempotent key) goes to the
  next edge.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from ._payload import check_url
from .exceptions import ValidationError

__all__ = ["EdgeSet", "parse_edge_urls", "edges_from_regions"]

REFRESH_S = 300.0
HEALTH_PATH = "/healthz"
REGIONS_PATH = "/api/v1/regions"
DOWN = "down"

EdgeUrls = Union[str, Sequence[str]]


def parse_edge_urls(value: EdgeUrls, field: str = "base_url") -> list[str]:
    """Edge URLs from a string (comma-separated allowed) or a list, checked and de-duplicated."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(f"{field} must be a URL or a list of URLs, got {item!r}")
        item = item.strip()
        if not item and isinstance(value, str):
            continue  # "a,,b" or a trailing comma
        url = check_url(item, field).rstrip("/")
        if url not in urls:
            urls.append(url)
    if not urls:
        check_url("", field)  # raises: at least one URL is required
    return urls


def edges_from_regions(data: Any) -> list[str]:
    """Edge URLs of regions that are not down, from a ``GET /api/v1/regions`` answer.

    ``{"regions": [{"id", "state", "reason", "edges": [url, ...]}, ...], "this_region"}``;
    anything malformed is skipped rather than trusted.
    """
    urls: list[str] = []
    regions = data.get("regions") if isinstance(data, Mapping) else None
    for region in regions if isinstance(regions, list) else []:
        if not isinstance(region, Mapping) or region.get("state") == DOWN:
            continue
        edges = region.get("edges")
        for url in edges if isinstance(edges, list) else []:
            try:
                for checked in parse_edge_urls([url], "edges"):
                    if checked not in urls:
                        urls.append(checked)
            except ValidationError:
                continue
    return urls


def _local_host(host: str) -> bool:
    """Loopback (``127.0.0.0/8``, ``::1``, ``localhost``) or unspecified (``0.0.0.0``, ``::``)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified


def discovered_edge_allowed(url: str, base: str) -> bool:
    """May a discovered ``url`` join a client whose base URL is ``base``? Same scheme, and a
    loopback or unspecified host only for a loopback base."""
    try:
        found, given = urlsplit(url), urlsplit(base)
        found_host, given_host = found.hostname or "", given.hostname or ""
    except ValueError:
        return False
    if found.scheme.lower() != given.scheme.lower() or not found_host:
        return False
    return not _local_host(found_host) or _local_host(given_host)


class EdgeSet:
    """The edges in the order to try them. Thread-safe; cheap to read."""

    def __init__(self, urls: Iterable[str], *, discover: bool = False) -> None:
        self._lock = threading.Lock()
        self._order = list(urls)
        self._seeds = tuple(self._order)
        self.discover_pending = discover
        self._probed_at: Optional[float] = None
        self.rtt_s: dict[str, Optional[float]] = {}

    @property
    def order(self) -> list[str]:
        with self._lock:
            return list(self._order)

    @property
    def first(self) -> str:
        with self._lock:
            return self._order[0]

    @property
    def seeds(self) -> tuple[str, ...]:
        return self._seeds

    def probe_due(self, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._order) < 2:
                return False
            return self._probed_at is None or now - self._probed_at >= REFRESH_S

    def add(self, urls: Iterable[str]) -> None:
        """Edges found by discovery (those :func:`discovered_edge_allowed` by a base URL); ranked at the next probe."""
        with self._lock:
            for url in urls:
                if url not in self._order and any(discovered_edge_allowed(url, seed) for seed in self._seeds):
                    self._order.append(url)
            self.discover_pending = False
            self._probed_at = None

    def ranked(self, rtt_s: Mapping[str, Optional[float]], now: Optional[float] = None) -> None:
        """Order by probe: healthy edges fastest first, then the rest as they were."""
        with self._lock:
            healthy = sorted(
                (u for u in self._order if rtt_s.get(u) is not None),
                key=lambda u: rtt_s[u],  # type: ignore[arg-type,return-value]
            )
            self._order = healthy + [u for u in self._order if rtt_s.get(u) is None]
            self.rtt_s = dict(rtt_s)
            self._probed_at = time.monotonic() if now is None else now

    def demote(self, url: str) -> None:
        """``url`` failed to connect: try it last from now on (until the next probe)."""
        with self._lock:
            if url in self._order and len(self._order) > 1:
                self._order.remove(url)
                self._order.append(url)

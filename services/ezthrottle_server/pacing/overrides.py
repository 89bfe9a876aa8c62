"""Operator overrides per domain: ``domains.yaml``, applied to Redis without a restart.

The file (``EZT_DOMAINS_FILE``, default ``domains.yaml`` beside regions.yaml)::

    domains:
      api.stripe.com:443:        # host:port; a bare host means port 443
        rps: 25                  # requests/s, instead of the default 2
        max_concurrent: 8        # requests in flight per node, instead of 2
        burst: 1                 # requests that may go back to back (GCRA burst)
        max_rps: 50              # this domain's ceiling for header-requested rates
        max_concurrent_ceiling: 16
        per_customer: false      # true: one limit per customer, each following
                                 # its own responses' headers
        pause: key               # a 429's Retry-After on a job with a flow-control
                                 # key pauses that key (default); "domain": the domain
        scope: credential        # one limit per credential: per value of the job's
                                 # Authorization header, whichever customer sends it
                                 # (pacing/scope.py); "domain" (default): one limit

Every field is optional. The coordinator that holds the lease applies the
file when it changes (checked every second) and at once on SIGHUP;
``ezthrottle-admin domains reload`` applies it by hand. An invalid file is
refused as a whole, logged and counted; the previous overrides stay.

In Redis, each domain's overrides are its ``conf`` hash, which every pacing
script reads on every call, so a change reaches every node at its next grant.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..common import keys
from ..common.metrics import PACING_CONFIG_LOADS
from ..common.redisconn import UNAVAILABLE, RedisClient
from . import OverridesError
from .limiter import conf_fields
from .scope import parse_domain

log = logging.getLogger(__name__)

_FLOATS = ("rps", "max_rps")
_INTS = ("max_concurrent", "burst", "max_concurrent_ceiling")
_BOOLS = ("per_customer",)
_CHOICES = {"pause": ("key", "domain"), "scope": ("domain", "credential")}
FIELDS = _FLOATS + _INTS + _BOOLS + tuple(_CHOICES)


@dataclass(frozen=True)
class Overrides:
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> fields
    digest: str = ""
    path: str = ""


def _check_domain(name: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OverridesError(f"domains.{name}: must be a mapping of {', '.join(FIELDS)}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise OverridesError(f"domains.{name}.{unknown[0]}: unknown field; allowed: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        where = f"domains.{name}.{k}"
        if k in _FLOATS:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise OverridesError(f"{where}: must be a number above 0")
            out[k] = float(v)
        elif k in _INTS:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OverridesError(f"{where}: must be an integer of at least 1")
            out[k] = v
        elif k in _CHOICES:
            if v not in _CHOICES[k]:
                raise OverridesError(f"{where}: must be one of {', '.join(_CHOICES[k])}")
            out[k] = v
        else:
            if not isinstance(v, bool):
                raise OverridesError(f"{where}: must be true or false")
            out[k] = v
    if out.get("per_customer") and out.get("scope") == "credential":
        raise OverridesError(
            f"domains.{name}: per_customer and scope: credential exclude each other (one limit per customer, or per credential)"
        )
    if "rps" in out and "max_rps" in out and out["rps"] > out["max_rps"]:
        raise OverridesError(f"domains.{name}: rps {out['rps']:g} is above its max_rps {out['max_rps']:g}")
    if out.get("max_concurrent", 0) > out.get("max_concurrent_ceiling", math.inf):
        raise OverridesError(f"domains.{name}: max_concurrent is above its max_concurrent_ceiling")
    return out


def parse_overrides(text: str, path: str = "domains.yaml") -> Overrides:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise OverridesError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise OverridesError(f"{path} must be a mapping with a 'domains' key")
    unknown = sorted(set(data) - {"domains"})
    if unknown:
        raise OverridesError(f"{path}: unknown top-level key {unknown[0]!r}; only 'domains' is allowed")
    raw = data.get("domains") or {}
    if not isinstance(raw, dict):
        raise OverridesError(f"{path}: 'domains' must be a mapping of host:port to overrides")
    domains: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for name, fields in raw.items():
        domain = parse_domain(str(name))
        if domain in seen:
            raise OverridesError(f"{path}: {name!r} names {domain}, which is listed twice")
        seen.add(domain)
        checked = _check_domain(str(name), fields)
        if checked:
            domains[domain] = checked
    digest = hashlib.sha256(repr(sorted((d, sorted(f.items())) for d, f in domains.items())).encode()).hexdigest()
    return Overrides(domains, digest, path)


def load_overrides(path: str | Path) -> Overrides:
    """The file's overrides; a missing file means none."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return parse_overrides("", str(p))
    except OSError as exc:
        raise OverridesError(f"cannot read {p}: {exc}") from exc
    return parse_overrides(text, str(p))


async def apply_overrides(redis: RedisClient, overrides: Overrides, *, force: bool = False) -> bool:
    """Make Redis hold exactly ``overrides``; False if it already did."""
    meta = keys.pacing_config_meta()
    if not force and await redis.hget(meta, "digest") == overrides.digest:  # type: ignore[misc]  # redis-py#2399
        return False
    before = set(await redis.smembers(keys.pacing_configured()))  # type: ignore[misc]  # redis-py#2399
    async with redis.pipeline(transaction=False) as pipe:
        for domain, fields in overrides.domains.items():
            pipe.delete(keys.pacing_conf(domain))
            pipe.hset(keys.pacing_conf(domain), mapping=conf_fields(fields))
        for domain in before - set(overrides.domains):
            pipe.delete(keys.pacing_conf(domain))
        pipe.delete(keys.pacing_configured())
        if overrides.domains:
            pipe.sadd(keys.pacing_configured(), *overrides.domains)
        pipe.hset(meta, mapping={"digest": overrides.digest, "path": overrides.path, "loaded_ms": int(time.time() * 1000)})
        await pipe.execute()
    return True


async def configured(redis: RedisClient) -> dict[str, dict[str, str]]:
    """Every overridden domain's stored fields."""
    domains = sorted(await redis.smembers(keys.pacing_configured()))  # type: ignore[misc]  # redis-py#2399
    async with redis.pipeline(transaction=False) as pipe:
        for d in domains:
            pipe.hgetall(keys.pacing_conf(d))
        rows = await pipe.execute()
    return dict(zip(domains, rows))


class OverridesWatcher:
    """Applies domains.yaml whenever it changes, or when asked (SIGHUP), while ``is_active()``."""

    def __init__(self, redis: RedisClient, path: str | Path, is_active: Any = lambda: True, poll_s: float = 1.0) -> None:
        self.redis = redis
        self.path = Path(path)
        self.is_active = is_active
        self.poll_s = poll_s
        self._requested = asyncio.Event()
        self._seen: tuple[float, int] | None = None
        self._was_active = False

    def request_reload(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self._requested.set()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    async def check(self, reread: bool = False) -> bool:
        """Apply the file if it changed since the last look (or ``reread``); True if Redis changed."""
        stamp = self._stamp()
        if not reread and stamp == self._seen:
            return False
        try:
            overrides = load_overrides(self.path)
        except OverridesError as exc:
            PACING_CONFIG_LOADS.labels("error").inc()
            log.error("domains file refused, previous overrides stay: %s", exc)
            self._seen = stamp  # don't log it every second; the next edit is looked at
            return False
        changed = await apply_overrides(self.redis, overrides)
        self._seen = stamp
        PACING_CONFIG_LOADS.labels("applied" if changed else "unchanged").inc()
        if changed:
            log.info("applied %s: %d domain overrides", self.path, len(overrides.domains))
        return changed

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.poll_s):
                    await self._requested.wait()
            except TimeoutError:
                pass
            forced = self._requested.is_set()
            self._requested.clear()
            active = bool(self.is_active())
            if active:
                try:
                    # Taking over the lease: re-apply, in case the file changed while we stood by.
                    await self.check(reread=forced or not self._was_active)
                except UNAVAILABLE:  # also a cluster failing over
                    log.warning("redis unavailable; domains file not applied", exc_info=True)
                    active = False
            self._was_active = active

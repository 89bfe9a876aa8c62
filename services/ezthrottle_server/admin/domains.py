"""``ezthrottle-admin domains …``: per-domain pacing, as operators see it.

    ezthrottle-admin domains show api.stripe.com:443 [--customer acme]
    ezthrottle-admin domains list
    ezthrottle-admin domains reload [--file domains.yaml]
    ezthrottle-admin domains pause api.stripe.com:443 [--for 600] [--customer acme]
    ezthrottle-admin domains resume api.stripe.com:443 [--customer acme]

``show`` prints a domain's current limit and where each part comes from:
``default`` (EZT_PACING_DEFAULT_*), ``config`` (domains.yaml) or ``header``
(the target's own X-EZTHROTTLE-*/X-Aqueduct-* answer), plus any pause and
the jobs waiting and running per region, and the circuit breaker's state.
``pause`` stops every send to a domain (until resumed, or for ``--for``
seconds); jobs wait, nothing is lost; ``resume`` ends it (and a target's
Retry-After pause with it).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ..common.config import load_settings
from ..pacing import OverridesError
from ..pacing.limiter import Limiter, PacingPolicy, ScopeView
from ..pacing.overrides import apply_overrides, configured, load_overrides
from ..pacing.scope import SHARED, Scope, parse_domain


def add_parser(sub: Any) -> None:
    d = sub.add_parser("domains", help="per-domain pacing: limits, their source, overrides").add_subparsers(dest="action", required=True)
    sh = d.add_parser("show", help="a domain's current limit and where it comes from (default, config or header)")
    sh.add_argument("domain", help="host:port, a bare host (port 443) or a URL")
    sh.add_argument("--customer", help="for a per-customer domain: that customer's limit (per credential: the cred:<hash> listed)")
    d.add_parser("list", help="domains that domains.yaml overrides, as applied in Redis")
    rl = d.add_parser("reload", help="apply domains.yaml now (the coordinator also does on change and on SIGHUP)")
    rl.add_argument("--file", help="default: EZT_DOMAINS_FILE, else domains.yaml beside regions.yaml")
    pa = d.add_parser("pause", help="stop sending to a domain (its jobs wait) until resumed, or for --for seconds")
    pa.add_argument("domain", help="host:port, a bare host (port 443) or a URL")
    pa.add_argument("--for", dest="for_s", type=float, default=None, help="seconds (default: until resumed)")
    pa.add_argument("--customer", help="for a per-customer domain: that customer's scope only")
    re_ = d.add_parser("resume", help="end a domain's pause (an operator's or a Retry-After's)")
    re_.add_argument("domain", help="host:port, a bare host (port 443) or a URL")
    re_.add_argument("--customer", help="for a per-customer domain: that customer's scope only")


UNTIL_RESUMED_S = 365 * 24 * 3600  # an operator's pause with no --for


def _when(ms: int) -> str:
    at = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{at[:-4]}Z ({(ms - time.time() * 1000) / 1000:.1f} s from now)"


def _source(source: str, clamped: bool) -> str:
    return f"{source}, clamped to the ceiling" if clamped else source


def _scope_text(view: ScopeView) -> str:
    who = view.scope.who
    if view.per_credential:
        if who == SHARED:
            return "jobs without an Authorization header (one limit per credential: pass --customer cred:<hash>)"
        return f"credential {who} (this domain keeps one limit per Authorization header)"
    if who != SHARED:
        return f"customer {who} (this domain keeps one limit per customer)"
    return "shared (configured per customer: pass --customer)" if view.per_customer else "shared by every customer"


def _text(view: ScopeView, scopes: list[str]) -> str:
    per_node = "per node"
    lines = [
        f"domain          {view.scope.domain}",
        f"scope           {_scope_text(view)}",
        f"rps             {view.rps:g} ({_source(view.rps_source, view.rps_clamped)})",
        f"max_concurrent  {view.max_concurrent} {per_node} ({_source(view.max_concurrent_source, view.max_concurrent_clamped)})",
        f"burst           {view.burst}",
        f"ceiling         rps {view.ceiling_rps:g}, max_concurrent {view.ceiling_max_concurrent}",
        f"paused          {'until ' + _when(view.paused_until_ms) if view.paused_until_ms else 'no'}",
        f"circuit         {view.circuit}" + (f" until {_when(view.circuit_open_until_ms)}" if view.circuit == "open" else ""),
        "waiting         " + " ".join(f"{r}={n}" for r, n in view.waiting.items()),
        "running         " + " ".join(f"{r}={n}" for r, n in view.running.items()),
    ]
    if view.per_customer and view.scope.who == SHARED:
        lines.append("customers       " + (", ".join(s for s in scopes if s != SHARED) or "(none with work)"))
    if view.per_credential and view.scope.who == SHARED:
        lines.append("credentials     " + (", ".join(s for s in scopes if s != SHARED) or "(none with work)"))
    return "\n".join(lines)


async def run(args: argparse.Namespace, r: Any) -> int:
    settings = load_settings("admin")
    try:
        if args.action == "show":
            domain = parse_domain(args.domain)
            limiter = Limiter(r, PacingPolicy.from_settings(settings), None, settings.region_ids)
            view = await limiter.describe(domain, args.customer or SHARED, settings.region_ids)
            scopes = await limiter.scopes_of(domain, settings.region_ids) if view.per_customer or view.per_credential else []
            if args.json:
                print(orjson.dumps({**view.as_dict(), "customers_with_work": [s for s in scopes if s != SHARED]}).decode())
            else:
                print(_text(view, scopes))
        elif args.action == "list":
            rows = await configured(r)
            if args.json:
                print(orjson.dumps(rows).decode())
            else:
                for domain, fields in rows.items():
                    print(f"{domain}  " + " ".join(f"{k}={v}" for k, v in sorted(fields.items())))
                if not rows:
                    print("no domain overrides")
        elif args.action in ("pause", "resume"):
            scope = Scope(parse_domain(args.domain), args.customer or SHARED)
            limiter = Limiter(r, PacingPolicy.from_settings(settings), None, settings.region_ids)
            if args.action == "pause":
                if args.for_s is not None and args.for_s <= 0:
                    print("error: --for must be a positive number of seconds", file=sys.stderr)
                    return 2
                until_ms = int(time.time() * 1000 + 1000 * (args.for_s if args.for_s is not None else UNTIL_RESUMED_S))
                await limiter.pause(scope, until_ms)
                out = {"domain": scope.domain, "scope": scope.who, "paused_until_ms": until_ms}
            else:
                await limiter.resume(scope)
                out = {"domain": scope.domain, "scope": scope.who, "paused_until_ms": None}
            said = f"paused until {_when(until_ms)}" if args.action == "pause" else "resumed"
            print(orjson.dumps(out).decode() if args.json else f"{scope}: {said}")
        elif args.action == "reload":
            overrides = load_overrides(args.file or settings.domains_file)
            await apply_overrides(r, overrides, force=True)
            out = {"file": overrides.path, "domains": sorted(overrides.domains)}
            print(orjson.dumps(out).decode() if args.json else f"applied {overrides.path}: {len(overrides.domains)} domain override(s)")
        return 0
    except OverridesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

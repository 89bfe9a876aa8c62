"""``ezthrottle-admin``: operator commands.

    ezthrottle-admin keys create --customer acme
    ezthrottle-admin keys list --customer acme
    ezthrottle-admin keys revoke <api key or key id>
    ezthrottle-admin deliveries dead [--customer acme] [--limit 100]
    ezthrottle-admin deliveries replay <job id> | --all [--customer acme]
    ezthrottle-admin domains show <host:port> [--customer acme]   (also: list, reload, pause, resume)
    ezthrottle-admin flow-control show|pause|resume --customer acme <key> [--for S]
    ezthrottle-admin secrets new-key | status | reseal
    ezthrottle-admin jobs show <job id> | repair [--dry-run] [--wait-s S] | cancel <job id> [--after-attempt]
                     | cancel --customer C [filters] [--after-attempt] [--no-wait]

Redis comes from ``REDIS_URL`` (or ``--redis-url``), else regions.yaml's
embedded Redis port.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from ..common import apikeys, deliveries
from ..common.config import ConfigError, load_settings
from ..common.redisconn import Scripts, connect
from . import domains, flow_control, jobs, secrets


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ezthrottle-admin", description="EZThrottle operator commands")
    p.add_argument("--redis-url", help="Redis to use (default: $REDIS_URL, else regions.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = p.add_subparsers(dest="area", required=True)
    k = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    c = k.add_parser("create", help="create an API key for a customer (prints it once)")
    c.add_argument("--customer", required=True)
    ls = k.add_parser("list", help="list a customer's keys (ids only, never the keys)")
    ls.add_argument("--customer", required=True)
    rv = k.add_parser("revoke", help="revoke a key, by the key itself or its id")
    rv.add_argument("key")
    d = sub.add_parser("deliveries", help="webhook deliveries").add_subparsers(dest="action", required=True)
    dd = d.add_parser("dead", help="list dead-lettered webhook deliveries, oldest first")
    dd.add_argument("--customer", help="only this customer's")
    dd.add_argument("--limit", type=int, default=100)
    dr = d.add_parser("replay", help="queue dead-lettered deliveries again, each with a fresh retry window")
    which = dr.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", help="the job whose dead webhooks to replay")
    which.add_argument("--all", action="store_true", help="every dead letter (of --customer if given)")
    dr.add_argument("--customer", help="with --all: only this customer's")
    domains.add_parser(sub)
    flow_control.add_parser(sub)
    secrets.add_parser(sub)
    jobs.add_parser(sub)
    return p


async def _deliveries(args: argparse.Namespace, r: Any) -> int:
    settings = load_settings("admin")
    if args.action == "dead":
        dead = await deliveries.list_dead(r, settings.partitions, customer=args.customer, limit=args.limit)
        if args.json:
            print(orjson.dumps(dead).decode())
        for entry in [] if args.json else dead:
            print(f"{entry['job_id']}  customer={entry['customer']}  dead_at_ms={entry['dead_at_ms']}  job={entry['job_status']}")
            for h in entry["webhooks"]:
                last = h["last_status_code"] if h["last_status_code"] is not None else h["last_error"]
                print(f"  [{h['index']}] {h['url']}  {h['dead_reason']}  attempts={h['attempts']}  last={last}")
        return 0
    scripts = Scripts(r)
    if args.all:
        jobs, hooks = await deliveries.replay_all(
            r, scripts, settings.partitions, settings.region_ids, settings.job_ttl_s, customer=args.customer
        )
    else:
        n = await deliveries.replay(r, scripts, args.job_id, settings.region_ids, settings.job_ttl_s)
        if n is None:
            print(f"no webhook deliveries for job {args.job_id!r}", file=sys.stderr)
            return 1
        jobs, hooks = (1 if n else 0), n
    print(orjson.dumps({"jobs": jobs, "replayed": hooks}).decode() if args.json else f"replayed {hooks} webhook(s) of {jobs} job(s)")
    return 0


async def _run(args: argparse.Namespace, redis_url: str) -> int:
    r = connect(redis_url)
    try:
        if args.area == "deliveries":
            return await _deliveries(args, r)
        if args.area == "domains":
            return await domains.run(args, r)
        if args.area == "flow-control":
            return await flow_control.run(args, r)
        if args.area == "secrets":
            return await secrets.run(args, r, load_settings("admin"))
        if args.area == "jobs":
            return await jobs.run(args, r, load_settings("admin"))
        if args.action == "create":
            key, rec = await apikeys.create_key(r, args.customer)
            out = {"api_key": key, "key_id": rec.key_id, "customer": rec.customer}
            print(orjson.dumps(out).decode() if args.json else f"customer: {rec.customer}\nkey id:   {rec.key_id}\napi key:  {key}")
        elif args.action == "list":
            recs = await apikeys.list_keys(r, args.customer)
            rows = [{"key_id": x.key_id, "created_ms": x.created_ms, "revoked": x.revoked} for x in recs]
            if args.json:
                print(orjson.dumps(rows).decode())
            else:
                for row in rows:
                    print(f"{row['key_id']}  created_ms={row['created_ms']}  {'revoked' if row['revoked'] else 'active'}")
        elif args.action == "revoke":
            if not await apikeys.revoke(r, args.key):
                print("no such key", file=sys.stderr)
                return 1
            print("revoked")
        return 0
    finally:
        await r.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        redis_url = args.redis_url or load_settings("admin").redis_url
        return asyncio.run(_run(args, redis_url))
    except (apikeys.InvalidCustomerId, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

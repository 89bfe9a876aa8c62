"""``ezthrottle-admin``: operator commands.

    ezthrottle-admin keys create --customer acme
    ezthrottle-admin keys list --customer acme
    ezthrottle-admin keys revoke <api key or key id>

Redis comes from ``REDIS_URL`` (or ``--redis-url``), else regions.yaml's
embedded Redis port.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from ..common import apikeys
from ..common.config import ConfigError, load_settings
from ..common.redisconn import connect


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
    return p


async def _run(args: argparse.Namespace, redis_url: str) -> int:
    r = connect(redis_url)
    try:
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

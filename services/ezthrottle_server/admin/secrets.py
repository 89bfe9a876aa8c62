"""``ezthrottle-admin secrets``: webhook secrets sealed at rest (common/secretbox.py).

    ezthrottle-admin secrets new-key            print a fresh key for EZT_SECRETS_KEYS
    ezthrottle-admin secrets status             how many customers' secrets are sealed, and with which key
    ezthrottle-admin secrets reseal             seal every stored secret with the first key of EZT_SECRETS_KEYS

Reseal is safe to run while the services run, and to run again: each value is
replaced only if it is still what was read (``swap_field.lua``), and a value
already sealed with the current key is left alone. A value that cannot be
opened (sealed with a key not listed) is counted and left as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

import orjson

from ..common import hashes, keys
from ..common.config import Settings
from ..common.redisconn import Scripts
from ..common.secretbox import SEALED_PREFIX, SecretBox, SecretBoxError, is_sealed, new_key, webhook_secret_context

FIELDS = ("primary", "secondary")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("secrets", help="webhook secrets at rest").add_subparsers(dest="action", required=True)
    s.add_parser("new-key", help="print a fresh 32-byte key (base64) for EZT_SECRETS_KEYS")
    s.add_parser("status", help="count stored secrets by how they are sealed")
    s.add_parser("reseal", help="seal every stored secret with the first key of EZT_SECRETS_KEYS")


def _how(stored: str) -> str:
    return f"sealed:{stored[len(SEALED_PREFIX) :].partition(':')[0]}" if is_sealed(stored) else "unsealed"


async def status(r: Any) -> dict[str, int]:
    counts: Counter[str] = Counter()
    async for key in r.scan_iter(match=keys.WEBHOOK_SECRETS_PATTERN, count=500):
        for value in await r.hmget(key, list(FIELDS)):
            if value:
                counts[_how(value)] += 1
    return dict(sorted(counts.items()))


async def reseal(r: Any, scripts: Scripts, box: SecretBox) -> dict[str, int]:
    """Seal every stored webhook secret with the box's current key."""
    out = {"resealed": 0, "current": 0, "unreadable": 0, "changed_meanwhile": 0}
    async for key in r.scan_iter(match=keys.WEBHOOK_SECRETS_PATTERN, count=500):
        customer = keys.customer_of_webhook_secrets(key)
        for field, stored in zip(FIELDS, await r.hmget(key, list(FIELDS))):
            if not stored:
                continue
            if not box.needs_reseal(stored):
                out["current"] += 1
                continue
            context = webhook_secret_context(customer, field)
            try:
                sealed = box.seal(box.open(stored, context, allow_unsealed=True), context)
            except SecretBoxError:
                out["unreadable"] += 1
                continue
            swapped = await hashes.swap_field(scripts.swap_field, key, field, expected=stored, new=sealed)
            out["resealed" if swapped else "changed_meanwhile"] += 1
    return out


async def run(args: argparse.Namespace, r: Any, settings: Settings) -> int:
    if args.action == "new-key":
        print(new_key())
        return 0
    if args.action == "status":
        counts = await status(r)
        print(
            orjson.dumps(counts).decode() if args.json else "\n".join(f"{k}: {v}" for k, v in counts.items()) or "no webhook secrets stored"
        )
        return 0
    box = SecretBox(settings.secrets_keys)
    if not box.enabled:
        print("error: EZT_SECRETS_KEYS is not set: nothing to seal with (ezthrottle-admin secrets new-key makes a key)", file=sys.stderr)
        return 2
    out = await reseal(r, Scripts(r), box)
    print(orjson.dumps(out).decode() if args.json else ", ".join(f"{k}={v}" for k, v in out.items()))
    return 1 if out["unreadable"] else 0

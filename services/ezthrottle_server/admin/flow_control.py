"""``ezthrottle-admin flow-control …``: a customer's flow-control keys, as operators see them.

    ezthrottle-admin flow-control show  --customer acme <key>
    ezthrottle-admin flow-control pause --customer acme <key> [--for 600]
    ezthrottle-admin flow-control resume --customer acme <key>

A key is per customer (the same string from two customers names two keys),
so every command names both. ``pause`` stops every send of the key's jobs,
in every region (until resumed, or for ``--for`` seconds); its jobs wait,
nothing is lost, and the domains they go to are not paused. ``resume`` ends
the pause (an operator's, the customer's own, or a target's Retry-After) and
brings the jobs it held back forward. The customer sees and does the same
through ``/api/v1/flow-control/{key}`` (``pacing/flow.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from ..common.apikeys import check_customer_id
from ..pacing.flow import KEY_TTL_S, FlowControl

MAX_PAUSE_S = KEY_TTL_S  # as the customer's route: a pause "until resumed" lasts as long as an unused key is kept


def add_parser(sub: Any) -> None:
    f = sub.add_parser("flow-control", help="a customer's flow-control keys: state, pause, resume").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("show", "a key's rate, parallelism, sends in flight and pause"),
        ("pause", "stop sending a key's jobs (they wait) until resumed, or for --for seconds"),
        ("resume", "end a key's pause (an operator's, the customer's or a Retry-After's)"),
    ):
        a = f.add_parser(action, help=text)
        a.add_argument("key", help="the flow-control key, as the customer's jobs name it")
        a.add_argument("--customer", required=True, help="the customer whose key it is (keys are per customer)")
        if action == "pause":
            a.add_argument("--for", dest="for_s", type=float, default=None, help=f"seconds (default: until resumed, at most {MAX_PAUSE_S})")


def _text(customer: str, state: dict[str, Any]) -> str:
    paused = state["paused_until_ms"]
    until = f"until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(paused / 1000))}" if paused else "no"
    return "\n".join(
        [
            f"key          {state['key']} (customer {customer})",
            f"rate         {state['rate'] if state['rate'] is not None else '-'}",
            f"parallelism  {state['parallelism'] if state['parallelism'] is not None else '-'}",
            f"in flight    {state['in_flight']}",
            f"paused       {until}",
        ]
    )


async def run(args: argparse.Namespace, r: Any) -> int:
    customer = check_customer_id(args.customer)
    flow = FlowControl(r)
    if await flow.state(customer, args.key) is None:
        print(f"error: customer {customer!r} has no flow-control key {args.key!r} (a job that names it creates it)", file=sys.stderr)
        return 1
    if args.action == "pause":
        for_s = MAX_PAUSE_S if args.for_s is None else args.for_s
        if not 0 < for_s <= MAX_PAUSE_S:
            print(f"error: --for must be a number of seconds above 0, at most {MAX_PAUSE_S}", file=sys.stderr)
            return 2
        await flow.pause(customer, args.key, int(time.time() * 1000 + for_s * 1000))
    elif args.action == "resume":
        await flow.resume(customer, args.key)
    state = await flow.state(customer, args.key)
    assert state is not None
    print(orjson.dumps({"customer": customer, **state}).decode() if args.json else _text(customer, state))
    return 0

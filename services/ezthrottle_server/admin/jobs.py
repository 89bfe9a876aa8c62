"""``ezthrottle-admin jobs``: where a job is, and jobs that nothing holds.

    ezthrottle-admin jobs show <job id>
        its state, attempts and what holds it in each region: its region's
        stream (``stream:iad``), the delayed set, a pacing queue, a lease
    ezthrottle-admin jobs repair [--dry-run] [--wait-s S]
        two passes over every job record, S seconds apart (default
        EZT_REPAIR_AFTER_S): jobs not final and held by nothing in both, and
        unchanged, are queued again (what the active coordinator does on its
        own, coordinator/repair.py); --dry-run only lists them
    ezthrottle-admin jobs reindex
        add to their customers' job indexes (common/job_index.py) the jobs
        accepted before the index existed, so GET /api/v1/jobs lists them; once
    ezthrottle-admin jobs cancel <job id> [--after-attempt]
        cancel a job that has not ended, whoever's it is, and what is pending
        below it in its workflow (as ``DELETE /api/v1/jobs/{id}``,
        common/cancels.py): nothing is sent after it answers
    ezthrottle-admin jobs cancel --customer C [--status S] [--domain D] [--metadata K=V ...]
            [--created-after MS] [--created-before MS] [--root-job-id ID] [--after-attempt] [--no-wait]
        cancel every job of customer C the filters match (those of GET
        /api/v1/jobs; jobs not yet final unless --status says), as the bulk
        action of ``POST /api/v1/jobs/cancel`` (common/bulk.py): run here,
        printing its progress as it goes, or with --no-wait left to the
        edges (their sweep takes it up; its progress at GET
        /api/v1/jobs/cancel/{id}); stopped midway (Ctrl-C), an edge goes on
        with it

Exit status: ``show`` 1 for an unknown job; ``repair`` 0 (``--dry-run``: 1
when it found any, so scripts can alert on it); ``cancel`` 0 when cancelled
(or requested: ``--after-attempt`` with an attempt in flight), 1 for an
unknown job, 2 when it has ended or an attempt is in flight; by filter, 0 once
the action is done (or handed to the edges), 1 for a bad filter, 2 when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from ..common import bulk, bulk_cancel, job_index, keys
from ..common.bulk import BulkRunner
from ..common.cancels import CancelOutcome, end_job
from ..common.config import Settings
from ..common.errors import ApiError
from ..common.holders import FIELDS, FINAL, Candidate, holders
from ..common.redisconn import Scripts
from ..common.repair import RepairPass
from ..edge.cancel_api import parse_filter


def add_parser(sub: Any) -> None:
    j = sub.add_parser("jobs", help="where jobs are; jobs held by nothing").add_subparsers(dest="action", required=True)
    show = j.add_parser("show", help="a job's state and what holds it in each region")
    show.add_argument("job_id")
    rp = j.add_parser("repair", help="queue again the jobs that nothing holds (two passes, --wait-s apart)")
    rp.add_argument("--dry-run", action="store_true", help="only list them")
    rp.add_argument("--wait-s", type=float, default=None, help="between the passes (default: EZT_REPAIR_AFTER_S)")
    j.add_parser("reindex", help="index the jobs accepted before the job index existed (GET /api/v1/jobs lists them)")
    cancel = j.add_parser("cancel", help="cancel a job that has not ended (and what is pending below it), or a customer's jobs by filter")
    cancel.add_argument("job_id", nargs="?", help="one job; or none, and --customer with filters")
    cancel.add_argument("--after-attempt", action="store_true", help="an attempt in flight: cancel once it ends")
    cancel.add_argument("--customer", help="whose jobs the filters match")
    cancel.add_argument("--status", help="a status or a comma list (default: the jobs not yet final)")
    cancel.add_argument("--domain", help="host or host:port")
    cancel.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="a metadata value (repeat for more)")
    cancel.add_argument("--created-after", type=int, metavar="MS")
    cancel.add_argument("--created-before", type=int, metavar="MS")
    cancel.add_argument("--root-job-id", help="a workflow: its root and every job below it")
    cancel.add_argument("--no-wait", action="store_true", help="start the action and leave it to the edges")


async def cancel_matching(r: Any, settings: Settings, args: argparse.Namespace) -> int:
    """``jobs cancel --customer C <filters>``: a bulk cancel (common/bulk.py), run here with its progress printed."""
    raw: dict[str, Any] = {}
    for name in ("status", "domain", "created_after", "created_before", "root_job_id"):
        if getattr(args, name) is not None:
            raw[name] = getattr(args, name)
    for pair in args.metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            print(f"--metadata {pair!r}: write KEY=VALUE", file=sys.stderr)
            return 1
        raw[f"metadata.{key}"] = value
    try:
        flt = parse_filter(raw)
    except ApiError as exc:
        print(f"bad filter: {exc.message}", file=sys.stderr)
        return 1
    created = bulk.now_ms()
    params = bulk_cancel.params(flt, args.after_attempt, created)
    # counted by the runner as it goes (an edge counts first, to answer at once)
    action = await bulk.create(
        r, settings, args.customer, bulk_cancel.KIND, bulk_cancel.ID_PREFIX, params, matched=0, matched_exact=False, created_ms=created
    )
    if args.no_wait:
        await r.zadd(keys.bulk_orphans(), {f"{args.customer}|{action.action_id}": 0})  # the next sweep of any edge takes it
        _show(args, bulk_cancel.view(action.action_id, await bulk.read(r, args.customer, action.action_id) or {}))
        return 0
    runner = BulkRunner(r, Scripts(r), settings, "admin")
    task = asyncio.create_task(runner.run(action))
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        record = await bulk.read(r, args.customer, action.action_id)
        if record is not None and not args.json:
            _show(args, bulk_cancel.view(action.action_id, record))
    await task
    view = bulk_cancel.view(action.action_id, await bulk.read(r, args.customer, action.action_id) or {})
    if args.json:
        _show(args, view)
    return 0 if view["state"] == "done" else 2


def _show(args: argparse.Namespace, view: dict[str, Any]) -> None:
    if args.json:
        print(orjson.dumps(view).decode())
        return
    names = ("action_id", "state", "matched", "cancelled", "cancel_requested", "in_flight", "skipped_final", "not_found")
    print(" ".join(f"{n}={view.get(n)}" for n in names), flush=True)


async def cancel_job(r: Any, settings: Settings, job_id: str, *, after_attempt: bool = False) -> dict[str, Any]:
    """Cancel a job as its customer would (``DELETE /api/v1/jobs/{id}``), whoever the customer is."""
    customer = await r.hget(keys.job(job_id), "customer") if keys.job_partition(job_id) is not None else None
    if customer is None:
        return {"job_id": job_id, "status": CancelOutcome.NOT_FOUND.value}
    now = int(time.time() * 1000)
    reply = await end_job(r, Scripts(r), settings, job_id, customer=customer, now_ms=now, after_attempt=after_attempt)
    return {
        "job_id": job_id,
        "customer": customer,
        "status": reply.outcome.value,
        "children_cancelled": reply.children_cancelled,
        "children_cancel_requested": reply.children_requested,
    }


async def show(r: Any, settings: Settings, job_id: str) -> dict[str, Any] | None:
    if keys.job_partition(job_id) is None:
        return None
    async with r.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.job(job_id), *FIELDS)
        pipe.llen(keys.attempts(job_id))
        row, attempts = await pipe.execute()
    fields = dict(zip(FIELDS, row))
    if fields["state"] is None:
        return None
    regions = [x for x in (fields["regions"] or "").split(",") if x]
    c = Candidate(job_id, keys.job_partition(job_id) or 0, fields, regions, int(attempts))
    held_by = await holders(r, settings.region_ids, c, int(time.time() * 1000), {}, fix_ready=False)
    final = fields["state"] in FINAL
    return {
        "job_id": job_id,
        "state": fields["state"],
        "customer": fields["customer"],
        "regions": regions,
        "attempts": int(attempts),
        "repairs": int(fields["repairs"] or 0),
        "age_s": round((time.time() * 1000 - int(fields["created_ms"] or 0)) / 1000, 1),
        "held_by": held_by,
        "stuck": not final and not held_by,
    }


async def run(args: argparse.Namespace, r: Any, settings: Settings) -> int:
    if args.action == "cancel" and args.job_id is None:
        if not args.customer:
            print("give a job id, or --customer with filters", file=sys.stderr)
            return 1
        return await cancel_matching(r, settings, args)
    if args.action == "cancel":
        answer = await cancel_job(r, settings, args.job_id, after_attempt=args.after_attempt)
        if args.json:
            print(orjson.dumps(answer).decode())
        else:
            print(" ".join(f"{k}={v}" for k, v in answer.items()))
        done = (CancelOutcome.CANCELLED.value, CancelOutcome.CANCEL_REQUESTED.value)
        return 0 if answer["status"] in done else 1 if answer["status"] == CancelOutcome.NOT_FOUND.value else 2
    if args.action == "reindex":
        added = await job_index.reindex(r, settings)
        print(orjson.dumps({"added": added}).decode() if args.json else f"indexed {added} job(s)")
        return 0
    if args.action == "show":
        view = await show(r, settings, args.job_id)
        if view is None:
            print(f"no job {args.job_id!r}", file=sys.stderr)
            return 1
        if args.json:
            print(orjson.dumps(view).decode())
        else:
            for k, v in view.items():
                print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")
        return 0
    wait_s = settings.repair_after_s if args.wait_s is None else args.wait_s
    # An operator's command acts whatever the coordinators' lease says.
    repairer = RepairPass(settings.with_overrides(repair_after_s=wait_s), r, Scripts(r), step_pause_s=0, dry_run=args.dry_run)
    await repairer.sweep()  # first sight: suspects only
    await asyncio.sleep(wait_s)
    await repairer.sweep()
    found = repairer.found
    if args.json:
        print(orjson.dumps({"dry_run": args.dry_run, "jobs": found}).decode())
    else:
        verb = "would queue again" if args.dry_run else "queued again"
        for f in found:
            print(f"{f['job_id']}  was {f['state']}  {verb} in {','.join(f['regions'])}")
        print(f"{len(found)} job(s) held by nothing")
    return 1 if args.dry_run and found else 0

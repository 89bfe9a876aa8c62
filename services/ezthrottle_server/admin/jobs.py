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

Exit status: ``show`` 1 for an unknown job; ``repair`` 0 (``--dry-run``: 1
when it found any, so scripts can alert on it); ``cancel`` 0 when cancelled
(or requested: ``--after-attempt`` with an attempt in flight), 1 for an
unknown job, 2 when it has ended or an attempt is in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from ..common import job_index, keys
from ..common.cancels import CancelOutcome, end_job
from ..common.config import Settings
from ..common.holders import FIELDS, FINAL, Candidate, holders
from ..common.redisconn import Scripts
from ..common.repair import RepairPass


def add_parser(sub: Any) -> None:
    j = sub.add_parser("jobs", help="where jobs are; jobs held by nothing").add_subparsers(dest="action", required=True)
    show = j.add_parser("show", help="a job's state and what holds it in each region")
    show.add_argument("job_id")
    rp = j.add_parser("repair", help="queue again the jobs that nothing holds (two passes, --wait-s apart)")
    rp.add_argument("--dry-run", action="store_true", help="only list them")
    rp.add_argument("--wait-s", type=float, default=None, help="between the passes (default: EZT_REPAIR_AFTER_S)")
    j.add_parser("reindex", help="index the jobs accepted before the job index existed (GET /api/v1/jobs lists them)")
    cancel = j.add_parser("cancel", help="cancel a job that has not ended (and what is pending below it)")
    cancel.add_argument("job_id")
    cancel.add_argument("--after-attempt", action="store_true", help="an attempt in flight: cancel once it ends")


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

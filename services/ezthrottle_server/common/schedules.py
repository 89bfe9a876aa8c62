"""Schedules: a job payload fired on a cron expression or every N seconds.

A schedule is one hash (``keys.schedule``) under the ``{ezt:sched}`` tag, with
the due set and the customer's set, so one script changes them together:
``schedule_write.lua`` (create, change, pause), ``schedule_delete.lua``,
``schedule_claim.lua`` (a tick, once) and ``schedule_fired.lua`` (what the
tick became). The edge validates and stores them (``edge/schedules_api.py``);
the coordinator's leader fires them (``coordinator/schedules.py``).

Fields of the hash: ``customer``, ``cron`` or ``every_s`` (with ``anchor_ms``,
the time ticks count from), ``timezone``, ``overlap`` (``skip`` | ``allow``),
``job`` (the validated payload, JSON), ``region`` (the edge that took it: a
job without ``regions`` runs there, as a submission does), ``paused`` (0/1),
``next_ms``, ``created_ms``, ``updated_ms``, ``firing`` (a claimed tick not yet
recorded), ``last_fired_ms``, ``last_job_id``, ``last_error``,
``last_skipped_ms``, ``fired_count``, ``skipped_count``.

Cron expressions are read by ``croniter`` in the schedule's time zone
(``zoneinfo``); nothing here parses cron.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import CroniterError, croniter

from .errors import ApiError
from .jobs import validate_job

OVERLAPS = ("skip", "allow")
MAX_EVERY_S = 366 * 24 * 3600
MAX_TIMEZONE_LENGTH = 64
SCHEDULE_ID_PATTERN = "^sch_[0-9a-f]{24}$"
_SCHEDULE_ID = re.compile(SCHEDULE_ID_PATTERN)
SPEC_FIELDS = frozenset({"cron", "every_s", "timezone", "job", "overlap"})
PATCH_FIELDS = SPEC_FIELDS | {"paused"}
# Job fields a schedule decides itself: each tick's key, and the time it runs.
SCHEDULE_OWNS = ("idempotent_key", "retry_at", "start_before_ms")


def is_schedule_id(value: str) -> bool:
    return bool(_SCHEDULE_ID.match(value))


def _bad(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(code, f"{field}: {message}", field=field)


def check_cron(value: Any) -> str:
    """A 5-field cron expression (or a nickname such as ``@hourly``) that fires at some point."""
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise _bad("cron", "must be a cron expression such as '*/5 * * * *'")
    expr = " ".join(value.split())
    if not expr.startswith("@") and len(expr.split(" ")) != 5:
        raise _bad("cron", "must have 5 fields (minute hour day-of-month month day-of-week)")
    if not croniter.is_valid(expr):
        raise _bad("cron", f"{expr!r} is not a valid cron expression")
    try:
        croniter(expr, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, ValueError) as exc:
        raise _bad("cron", f"{expr!r} never fires") from exc
    return expr


def check_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TIMEZONE_LENGTH or not value.isprintable():
        raise _bad("timezone", "must be an IANA time zone name such as 'UTC' or 'Europe/Paris'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise _bad("timezone", f"unknown time zone {value!r}") from exc
    return value


def check_every_s(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EVERY_S:
        raise _bad("every_s", f"must be a whole number of seconds, 1 to {MAX_EVERY_S}")
    return value


def check_overlap(value: Any) -> str:
    if value not in OVERLAPS:
        raise _bad("overlap", "must be 'skip' (no tick while the last fired job is not final) or 'allow'")
    return str(value)


def check_job(value: Any, known_regions: Collection[str]) -> dict[str, Any]:
    """The job payload, validated as a submission's (fields named ``job.<field>``)."""
    if not isinstance(value, dict):
        raise ApiError("invalid_field", "job: must be a job payload (an object with at least a url)", field="job")
    for name in SCHEDULE_OWNS:
        if value.get(name) is not None:
            raise _bad(f"job.{name}", "is set by the schedule (each tick gets its own key and runs at its time)")
    return validate_job(value, known_regions, _path="job")


def check_spec(body: Any, known_regions: Collection[str], *, partial: bool) -> dict[str, Any]:
    """The fields of a POST (``partial=False``: job and cron or every_s required) or a PATCH body, checked.

    Answers only the fields given, normalised; ``cron`` and ``every_s`` exclude
    each other (a PATCH giving one drops the other).
    """
    if not isinstance(body, dict):
        raise ApiError("invalid_request", "body: must be a JSON object")
    allowed = PATCH_FIELDS if partial else SPEC_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(unknown[0], "unknown field", "unknown_field")
    out: dict[str, Any] = {}
    if body.get("cron") is not None and body.get("every_s") is not None:
        raise _bad("every_s", "give cron or every_s, not both")
    if body.get("cron") is not None:
        out["cron"] = check_cron(body["cron"])
    elif body.get("every_s") is not None:
        out["every_s"] = check_every_s(body["every_s"])
    elif not partial:
        raise _bad("cron", "a schedule needs cron or every_s", "missing_field")
    if body.get("timezone") is not None or not partial:
        out["timezone"] = check_timezone(body.get("timezone", "UTC") if body.get("timezone") is not None else "UTC")
    if body.get("overlap") is not None or not partial:
        out["overlap"] = check_overlap(body.get("overlap") if body.get("overlap") is not None else "skip")
    if "job" in body or not partial:
        if "job" not in body:
            raise _bad("job", "is required", "missing_field")
        out["job"] = check_job(body["job"], known_regions)
    if partial and body.get("paused") is not None:
        if not isinstance(body["paused"], bool):
            raise _bad("paused", "must be true or false")
        out["paused"] = body["paused"]
    return out


def next_fire_ms(schedule: Mapping[str, str], after_ms: int) -> int:
    """The first tick strictly after ``after_ms``: by cron in the schedule's zone, or every_s from anchor_ms."""
    every_s = int(schedule.get("every_s") or 0)
    if every_s:
        anchor = int(schedule.get("anchor_ms") or 0)
        period = every_s * 1000
        if after_ms < anchor:
            return anchor
        return anchor + ((after_ms - anchor) // period + 1) * period
    zone = ZoneInfo(schedule.get("timezone") or "UTC")
    start = datetime.fromtimestamp(after_ms / 1000, zone)
    nxt = croniter(schedule["cron"], start).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def view(schedule_id: str, data: Mapping[str, str]) -> dict[str, Any]:
    """A schedule as the API shows it."""

    def num(name: str) -> int | None:
        value = data.get(name)
        return int(value) if value else None

    paused = data.get("paused") == "1"
    return {
        "schedule_id": schedule_id,
        "cron": data.get("cron") or None,
        "every_s": num("every_s"),
        "timezone": data.get("timezone") or "UTC",
        "overlap": data.get("overlap") or "skip",
        "paused": paused,
        "next_fire_at_ms": None if paused else num("next_ms"),
        "job": orjson.loads(data["job"]) if data.get("job") else None,
        "created_at_ms": num("created_ms"),
        "updated_at_ms": num("updated_ms"),
        "last_fired_at_ms": num("last_fired_ms"),
        "last_job_id": data.get("last_job_id") or None,
        "last_error": data.get("last_error") or None,
        "last_skipped_at_ms": num("last_skipped_ms"),
        "fired_count": int(data.get("fired_count") or 0),
        "skipped_count": int(data.get("skipped_count") or 0),
    }

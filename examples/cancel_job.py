#!/usr/bin/env python3
"""Cancel a job that has not run yet, and give a job a deadline (``start_before``).

A cancelled job is never sent, and its webhooks say ``"cancelled"``; a job
not started by its deadline ends ``"expired"`` and is never sent late. The
published SDK's handlers test ``status == "success"``, so both read as "did
not happen".
"""

import time

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, EZThrottleError, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)


def now_ms() -> int:
    return int(time.time() * 1000)


# A report scheduled for in a minute... that we no longer want.
report = (
    Step(client)
    .url(target("api.example.com/reports"))
    .method("POST")
    .body('{"month": "2026-11"}')
    .retry_at(now_ms() + 60_000)
    .webhooks([{"url": webhook("app.com/webhook")}])
    .execute()
)
answer = client.cancel_job(report["job_id"])
print(f"cancel: {answer['status']}")  # nothing is sent after this answer

try:
    client.cancel_job(report["job_id"])
except EZThrottleError as error:
    print(f"cancel again: {error.code}")  # already_final (HTTP 409)
    assert error.code == "already_final" and error.status_code == 409, error

# A flash-sale call that is worth making only before its deadline. Held until
# `due` and due to start within a millisecond of it, it misses the deadline:
# it ends expired, unsent.
due = now_ms() + 1000
flash = Step(client).url(target("api.example.com/flash-sale")).retry_at(due).start_before(due + 1).execute()

# The same call with room to start: it runs.
in_time = Step(client).url(target("api.example.com/in-time")).start_before(now_ms() + 30_000).execute()

# -- checked: cancelled and expired are final, unsent, reported ------------------
view = wait_final(client, report["job_id"])
assert view["status"] == "cancelled" and view["attempts"] == [], view
assert answer["status"] == "cancelled", answer
delivered = wait_webhooks_delivered(client, report["job_id"])
assert delivered["webhooks"]["quorum_met"], delivered

expired = wait_final(client, flash["job_id"])
assert expired["status"] == "expired" and expired["attempts"] == [], expired
print(f"flash sale: {expired['status']} ({expired['error']})")

ran = wait_final(client, in_time["job_id"])
assert ran["status"] == "success" and ran["start_before_ms"], ran
print("in time: success")

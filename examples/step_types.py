#!/usr/bin/env python3
"""README "Step Types": PERFORMANCE (server-side, raced across regions) and FRUGAL (local first)."""

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# StepType.PERFORMANCE (Server-side execution)
performance = (
    Step(client)
    .url(target("api.stripe.com/charges"))
    .type(StepType.PERFORMANCE)
    .webhooks([{"url": webhook("app.com/webhook")}])
    .regions(["iad", "lax", "ord"])  # Multi-region racing
    .execution_mode("race")  # First completion wins
    .execute()
)
print("PERFORMANCE:", performance)

# StepType.FRUGAL (Client-side first)
frugal = (
    Step(client)
    .url(target("api.example.com"))
    .type(StepType.FRUGAL)
    .fallback_on_error([429, 500, 503])  # Forward to EZThrottle on these codes
    .execute()
)
print("FRUGAL:", frugal)

# -- checked -------------------------------------------------------------------------
view = wait_final(client, performance["job_id"])
assert view["status"] == "success", view
assert view["winner_region"] in ("iad", "lax", "ord"), view
# The API answered: FRUGAL ran here and EZThrottle was never involved.
assert frugal["executed_locally"] is True and frugal["status"] == "success", frugal
assert frugal["status_code"] == 200, frugal

# Not in the README: the same FRUGAL step against an API that answers 503 once is
# forwarded, and EZThrottle gets it through.
forwarded = (
    Step(client)
    .url(target(f"api.example.com/flaky/503/1?run={RUN_ID}"))  # 503, then 200
    .type(StepType.FRUGAL)
    .fallback_on_error([429, 500, 503])
    .execute()
)
print("FRUGAL, forwarded on 503:", forwarded)
assert forwarded["status"] == "queued" and "executed_locally" not in forwarded, forwarded
assert wait_final(client, forwarded["job_id"])["status"] == "success"

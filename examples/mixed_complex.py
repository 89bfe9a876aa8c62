#!/usr/bin/env python3
"""README "Mixed Workflow Chains", Example 3: a complex mixed workflow.

Run twice, to show both paths:

1. The cheap API answers: it ran here; the critical notification is submitted
   to EZThrottle; its FRUGAL analytics step comes back in the notification's
   webhook and runs in your app (served here with FastAPI and ``WebhookHandler``).
2. The cheap API answers 500: the backup is not FRUGAL, so the whole workflow is
   forwarded. EZThrottle tries the cheap API, then the backup (its fallback on
   500), then the critical notification (the backup inherits the on_success);
   the analytics step again comes back to your app in a webhook.
"""

import os
import warnings

from _support import (
    API_KEY,
    EZTHROTTLE_URL,
    RUN_ID,
    serve_asgi,
    target,
    wait_child,
    wait_final,
    wait_until,
)
from fastapi import FastAPI

from ezthrottle import EZThrottle, Step, StepType, WebhookHandler
from ezthrottle.adapters.fastapi import fastapi_webhook_route

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# -- your app: the webhook endpoint ------------------------------------------------
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET_PRIMARY") or f"example-secret-{RUN_ID}"
client.create_webhook_secret(WEBHOOK_SECRET)  # EZThrottle signs webhooks with it
handler = WebhookHandler(client, secret=WEBHOOK_SECRET)
results = {}  # job id -> what the handler did with its webhook
app = FastAPI()
app.add_api_route(
    "/webhook",
    fastapi_webhook_route(handler, on_result=lambda r: results.setdefault(r.job_id, r)),
    methods=["POST"],
)
APP_URL, stop_app = serve_asgi(app)


def run(cheap_api_url):
    """The README's code; only the cheap API's URL differs between the two runs."""
    # Optimize every step for its requirements
    workflow = (
        Step(client)
        .url(cheap_api_url)
        .type(StepType.FRUGAL)  # Try locally first
        .fallback_on_error([429, 500])
        .fallback(
            # The README says "Still FRUGAL", but a Step is PERFORMANCE unless
            # .type(StepType.FRUGAL) says otherwise: EZThrottle runs this one.
            Step().url(target("backup-api.com")),
            trigger_on_error=[500],
        )
        .on_success(
            # Critical notification needs PERFORMANCE
            Step(client)
            .url(target("critical-webhook.com"))
            .type(StepType.PERFORMANCE)
            .webhooks([{"url": f"{APP_URL}/webhook"}])
            .regions(["iad", "lax", "ord"])
            .on_success(
                # Analytics is cheap again
                Step(client)
                .url(target("analytics.com/track"))
                .type(StepType.FRUGAL)
            )
        )
        .on_failure(
            # Simple Slack alert doesn't need PERFORMANCE
            Step(client)
            .url(target("hooks.slack.com/webhook"))
            .type(StepType.FRUGAL)
        )
    )
    return workflow, workflow.execute()


def analytics_ran_for(job_id):
    """The critical notification's webhook reached the app, which ran analytics once."""
    result = wait_until(lambda: results.get(job_id), f"the webhook of {job_id}")
    [step] = result.steps
    assert step.relation == "on_success" and step.status == "ran", step
    assert step.result["executed_locally"] and step.result["status_code"] == 200, step
    assert "/analytics.com/track" in step.result["response"]


# 1. The cheap API works.
workflow, result = run(target("cheap-api.com"))
print("1.", result)
print(workflow.execution_trace())
assert result["executed_locally"] is True and result["status"] == "success", result
critical = workflow.get_execution_history()[1]
assert critical["status"] == "submitted" and critical["step"].endswith("/critical-webhook.com")
assert wait_final(client, critical["job_id"])["status"] == "success"
analytics_ran_for(critical["job_id"])

# 2. The cheap API is down (the stand-in answers 500, here and on EZThrottle).
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    workflow, result = run(target(f"cheap-api.com/status/500?run={RUN_ID}"))
print("2.", result)
# The SDK warns about a gap in this workflow once it is forwarded: had the backup
# failed too, the FRUGAL Slack alert would have had to come back in a webhook, and
# neither the cheap API's job nor the backup's has one. (Add .webhooks([...]) to
# the cheap API's step to close it.)
[gap] = [w for w in caught if issubclass(w.category, UserWarning)]
print("warning:", gap.message)
assert "on_failure GET " + target("hooks.slack.com/webhook") in str(gap.message)
assert result["status"] == "queued" and workflow.get_execution_history()[0]["status"] == "forwarded"
cheap = wait_final(client, result["job_id"])
assert cheap["status"] == "failed" and cheap["result"]["status_code"] == 500, cheap
backup = wait_child(client, result["job_id"], "fallback")
assert backup["status"] == "success" and backup["url"] == target("backup-api.com"), backup
notification = wait_child(client, backup["job_id"], "on_success")
assert notification["url"] == target("critical-webhook.com"), notification
assert notification["status"] == "success", notification
analytics_ran_for(notification["job_id"])
print("2. cheap API failed on EZThrottle too → backup → critical notification → analytics here")
stop_app()

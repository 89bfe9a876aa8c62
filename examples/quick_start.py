#!/usr/bin/env python3
"""README "Quick Start": submit one PERFORMANCE job with a webhook."""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# Simple job submission
result = (
    Step(client)
    .url(target("api.example.com/endpoint"))
    .method("POST")
    .type(StepType.PERFORMANCE)
    .webhooks([{"url": webhook("your-app.com/webhook")}])
    .execute()
)

print(f"Job ID: {result['job_id']}")

# -- checked: the job ran on EZThrottle and its webhook was delivered --------------
assert result["status"] == "queued", result
view = wait_final(client, result["job_id"])
assert view["status"] == "success" and view["result"]["status_code"] == 200, view
wait_webhooks_delivered(client, result["job_id"])
print("success; webhook delivered")

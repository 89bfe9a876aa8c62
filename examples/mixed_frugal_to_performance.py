#!/usr/bin/env python3
"""README "Mixed Workflow Chains", Example 1: FRUGAL → PERFORMANCE.

The primary call runs here (cheap); on success the notification is submitted
to EZThrottle (raced across regions, webhook on completion).
"""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# Primary API call is cheap (local execution)
# But notification needs speed (multi-region racing)
workflow = (
    Step(client)
    .url(target("api.openai.com/v1/chat/completions"))
    .type(StepType.FRUGAL)  # Execute locally first
    .fallback_on_error([429, 500])
    .on_success(
        # Chain to PERFORMANCE for fast webhook delivery
        Step(client)
        .url(target("api.sendgrid.com/send"))
        .type(StepType.PERFORMANCE)  # Distributed execution
        .webhooks([{"url": webhook("app.com/email-sent")}])
        .regions(["iad", "lax", "ord"])
    )
)
result = workflow.execute()
print(result)
print(workflow.execution_trace())

# -- checked: OpenAI ran here, SendGrid ran on EZThrottle and its webhook went out --
assert result["executed_locally"] is True and result["status"] == "success", result
local, submitted = workflow.get_execution_history()
assert local["status"] == "success", local
assert submitted["status"] == "submitted" and submitted["step"].endswith("/api.sendgrid.com/send")
view = wait_final(client, submitted["job_id"])
assert view["status"] == "success" and view["url"] == target("api.sendgrid.com/send"), view
assert view["winner_region"] in ("iad", "lax", "ord")
wait_webhooks_delivered(client, submitted["job_id"])

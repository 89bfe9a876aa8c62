#!/usr/bin/env python3
"""README "Asyncio Streaming", Basic Asyncio Example: submit, keep going, the webhook comes later."""

import asyncio

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
submitted = []  # (not in the README) for the check below


async def process_with_webhook():
    # Submit job to EZThrottle
    result = (
        Step(client)
        .url(target("api.example.com/endpoint"))
        .method("POST")
        .type(StepType.PERFORMANCE)
        .webhooks([{"url": webhook("app.com/webhook"), "has_quorum_vote": True}])
        .idempotent_key("async_job_123")
        .execute()
    )

    print(f"Job submitted: {result['job_id']}")
    submitted.append(result)
    # Continue processing while EZThrottle executes the job
    # Your webhook endpoint will receive the result asynchronously


# Run async function
asyncio.run(process_with_webhook())

# -- checked -------------------------------------------------------------------------
[result] = submitted
assert result["idempotent_key"] == "async_job_123" and result["status"] in ("queued", "duplicate")
assert wait_final(client, result["job_id"])["status"] == "success"
wait_webhooks_delivered(client, result["job_id"])

#!/usr/bin/env python3
"""README "Fault-Tolerant Batch Processing": one refused submission does not sink the batch."""

import asyncio

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)


async def submit_job_with_error_handling(order):
    """Submit job with exception handling"""
    try:
        result = (
            Step(client)
            .url(target("api.example.com/process"))
            .method("POST")
            .body(str(order))
            .type(StepType.PERFORMANCE)
            .webhooks([{"url": webhook("app.com/webhook")}])
            .idempotent_key(f"order_{order['id']}")
            .execute()
        )
        return {"order_id": order["id"], "job_id": result["job_id"], "success": True}
    except Exception as e:
        return {"order_id": order["id"], "error": str(e), "success": False}


async def process_batch_with_error_handling(orders):
    tasks = [submit_job_with_error_handling(order) for order in orders]
    results = await asyncio.gather(*tasks, return_exceptions=True)

    succeeded = [r for r in results if isinstance(r, dict) and r.get("success")]
    failed = [r for r in results if isinstance(r, dict) and not r.get("success")] + \
             [r for r in results if isinstance(r, Exception)]

    print(f"Succeeded: {len(succeeded)}, Failed: {len(failed)}")
    return {"succeeded": succeeded, "failed": failed}


# Example usage
orders = [
    {"id": "order_1", "amount": 1000},
    {"id": "order_2", "amount": 2000},
    {"id": "order_3", "amount": 3000},
    # (not in the README) an order EZThrottle refuses: its key is over 256 characters
    {"id": "order_" + "9" * 300, "amount": 4000},
]

outcome = asyncio.run(process_batch_with_error_handling(orders))

# -- checked -------------------------------------------------------------------------
assert [r["order_id"] for r in outcome["succeeded"]] == ["order_1", "order_2", "order_3"]
[refused] = outcome["failed"]
print("refused:", refused["error"][:100])
assert "idempotent_key" in refused["error"], refused
for r in outcome["succeeded"]:
    assert wait_final(client, r["job_id"])["status"] == "success"

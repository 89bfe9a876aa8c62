#!/usr/bin/env python3
"""README "Concurrent Job Submission with asyncio.gather", and its truly async twin.

The README's version calls the sync ``execute()`` inside coroutines, so the
submissions run one after another. ``AsyncEZThrottle`` with
``await step.execute_async()`` never blocks the event loop: the second half
submits the same orders concurrently.
"""

import asyncio

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, webhook

from ezthrottle import AsyncEZThrottle, EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)


async def submit_job(order):
    """Submit a single job asynchronously"""
    result = (
        Step(client)
        .url(target("api.example.com/process"))
        .method("POST")
        .body(str(order))
        .type(StepType.PERFORMANCE)
        .webhooks([{"url": webhook("app.com/webhook"), "has_quorum_vote": True}])
        .idempotent_key(f"order_{order['id']}")
        .execute()
    )
    return {
        "order_id": order["id"],
        "job_id": result["job_id"],
        "idempotent_key": result.get("idempotent_key")
    }


async def process_batch_concurrently(orders):
    # Submit all jobs concurrently
    tasks = [submit_job(order) for order in orders]
    submissions = await asyncio.gather(*tasks)

    print(f"Submitted {len(submissions)} jobs concurrently")
    for s in submissions:
        print(f"Order {s['order_id']} → Job {s['job_id']}")

    # Webhook results will arrive asynchronously at https://app.com/webhook
    return submissions


# Example usage
orders = [
    {"id": "order_1", "amount": 1000},
    {"id": "order_2", "amount": 2000},
    {"id": "order_3", "amount": 3000}
]

submissions = asyncio.run(process_batch_concurrently(orders))


# -- the async twin (not in the README) ----------------------------------------------
async def process_batch_async(orders):
    async with AsyncEZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL) as async_client:
        async def submit(order):
            return await (
                Step(async_client)
                .url(target("api.example.com/process"))
                .method("POST")
                .body(str(order))
                .webhooks([{"url": webhook("app.com/webhook"), "has_quorum_vote": True}])
                .idempotent_key(f"async_order_{order['id']}")
                .execute_async()
            )

        jobs = await asyncio.gather(*(submit(order) for order in orders))
        # ... and wait for all of them on their event streams, concurrently too
        return await asyncio.gather(*(async_client.wait(job["job_id"], timeout_s=30) for job in jobs))


views = asyncio.run(process_batch_async(orders))
print("async twin:", [(v["job_id"], v["status"]) for v in views])

# -- checked -------------------------------------------------------------------------
assert [s["order_id"] for s in submissions] == ["order_1", "order_2", "order_3"]
assert [s["idempotent_key"] for s in submissions] == ["order_order_1", "order_order_2", "order_order_3"]
assert len({s["job_id"] for s in submissions}) == 3
for s in submissions:
    assert wait_final(client, s["job_id"])["status"] == "success"
assert [v["status"] for v in views] == ["success"] * 3, views

#!/usr/bin/env python3
"""README "Background Task Processing with asyncio": a queue drained by a background task."""

import asyncio

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, webhook

from ezthrottle import EZThrottle, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
submitted = []  # (not in the README) for the check below


async def background_job_processor(queue):
    """Process jobs from a queue in the background"""
    while True:  # bounded: main() cancels this task once the queue is drained
        if queue.empty():
            await asyncio.sleep(1)
            continue

        order = await queue.get()
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
            print(f"Submitted job {result['job_id']} for order {order['id']}")
            submitted.append(result)
        except Exception as e:
            print(f"Failed to submit order {order['id']}: {e}")
        finally:
            queue.task_done()


async def main():
    queue = asyncio.Queue()

    # Start background processor
    processor = asyncio.create_task(background_job_processor(queue))

    # Add jobs to queue
    orders = [
        {"id": "order_1", "amount": 1000},
        {"id": "order_2", "amount": 2000},
        {"id": "order_3", "amount": 3000}
    ]

    for order in orders:
        await queue.put(order)

    # Wait for all jobs to be processed
    await queue.join()

    # Cancel background processor
    processor.cancel()
    try:
        await processor
    except asyncio.CancelledError:
        pass

    print("All jobs processed!")


asyncio.run(main())

# -- checked -------------------------------------------------------------------------
assert [r["idempotent_key"] for r in submitted] == ["order_order_1", "order_order_2", "order_order_3"]
for r in submitted:
    assert wait_final(client, r["job_id"])["status"] == "success"

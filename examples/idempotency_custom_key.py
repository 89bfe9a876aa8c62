#!/usr/bin/env python3
"""README "Custom Keys": deduplicate by your own business key."""

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final

from ezthrottle import EZThrottle, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
order_id = f"12345-{RUN_ID}"

results = []
for attempt in range(2):  # the same order processed twice, e.g. after a crash
    # Custom key based on order ID
    results.append(
        Step(client)
        .url(target("api.example.com/process"))
        .idempotent_key(f"order-{order_id}")  # Dedup per order
        .execute()
    )
print(results)

# -- checked -------------------------------------------------------------------------
first, second = results
assert first["status"] == "queued" and first["idempotent_key"] == f"order-{order_id}", first
assert second["status"] == "duplicate" and second["job_id"] == first["job_id"], second
assert wait_final(client, first["job_id"])["status"] == "success"

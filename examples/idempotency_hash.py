#!/usr/bin/env python3
"""README "IdempotentStrategy.HASH (Default)": the same request twice runs once."""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final

from ezthrottle import EZThrottle, IdempotentStrategy, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)


def charge():
    # Prevents duplicate charges - same request = rejected as duplicate
    return (
        Step(client)
        .url(target("api.stripe.com/charges"))
        .body('{"amount": 1000, "currency": "usd"}')
        .idempotent_strategy(IdempotentStrategy.HASH)  # Default
        .execute()
    )


first = charge()
second = charge()
# Second call with same params → "duplicate" (not charged twice!)
print(first)
print(second)

# -- checked -------------------------------------------------------------------------
assert second["status"] == "duplicate", second
assert second["job_id"] == first["job_id"], (first, second)
assert wait_final(client, first["job_id"])["status"] == "success"

#!/usr/bin/env python3
"""README "IdempotentStrategy.UNIQUE": polling the same URL, and why HASH would refuse it."""

import time

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final

from ezthrottle import EZThrottle, IdempotentStrategy, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# Poll API every minute - each request gets unique UUID
jobs = []
for _ in range(3):  # the README polls forever (`while True`); three polls show it
    job = (
        Step(client)
        .url(target("api.example.com/status"))
        .idempotent_strategy(IdempotentStrategy.UNIQUE)  # New UUID each time
        .execute()
    )
    print(job)
    jobs.append(job)
    time.sleep(0.1)  # the README sleeps 60 s between polls

# Without UNIQUE strategy, polling would fail:
# BAD - Second request rejected as duplicate!
works = Step(client).url(target(f"api.com/status?run={RUN_ID}")).execute()  # Works
rejected = Step(client).url(target(f"api.com/status?run={RUN_ID}")).execute()  # Rejected! Same hash
print(works)
print(rejected)

# -- checked -------------------------------------------------------------------------
assert all(job["status"] == "queued" for job in jobs), jobs
assert len({job["job_id"] for job in jobs}) == 3, "every UNIQUE poll is a job of its own"
assert len({job["idempotent_key"] for job in jobs}) == 3
assert works["status"] == "queued", works
assert rejected["status"] == "duplicate" and rejected["job_id"] == works["job_id"], rejected
for job in (*jobs, works):
    assert wait_final(client, job["job_id"])["status"] == "success"

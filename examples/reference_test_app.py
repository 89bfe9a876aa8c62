#!/usr/bin/env python3
"""README "Reference Implementation: test-app/": the snippets that CI ran against httpbin.

The stand-in target answers httpbin's paths (``/status/<code>``, ``/delay/<s>``,
``/get``). The auto-forward snippet is in auto_forward_status_codes.py.
"""

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_child, wait_final, webhook

from ezthrottle import EZThrottle, IdempotentStrategy, Step, StepType

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
APP_URL = webhook("").rstrip("/")
run_id = RUN_ID

# Multi-Region Racing (test-app/app.py:134-145)
racing = (
    Step(client)
    .url(target("httpbin.org/delay/1"))
    .type(StepType.PERFORMANCE)
    .webhooks([{"url": f"{APP_URL}/webhook"}])
    .regions(["iad", "lax", "ord"])  # Race across 3 regions
    .execution_mode("race")  # First completion wins
    .execute()
)

# Idempotent HASH (Deduplication) (test-app/app.py:274-281)
# Same request twice = same job_id (deduplicated)
hashed = [
    Step(client)
    .url(target(f"httpbin.org/get?run={run_id}"))
    .idempotent_strategy(IdempotentStrategy.HASH)
    .execute()
    for _ in range(2)
]

# Fallback Chain (test-app/app.py:168-182)
fallback = (
    Step(client)
    .url(target("httpbin.org/status/500"))
    .fallback(
        Step().url(target("httpbin.org/status/200")),
        trigger_on_error=[500, 502, 503]
    )
    .execute()
)

# On-Success Workflow (test-app/app.py:198-213)
on_success = (
    Step(client)
    .url(target("httpbin.org/status/200"))
    .on_success(
        Step().url(target("httpbin.org/delay/1"))
    )
    .execute()
)

# -- checked -------------------------------------------------------------------------
view = wait_final(client, racing["job_id"])
assert view["status"] == "success" and view["winner_region"] in ("iad", "lax", "ord"), view
assert hashed[1]["status"] == "duplicate" and hashed[1]["job_id"] == hashed[0]["job_id"], hashed
assert wait_final(client, fallback["job_id"])["status"] == "failed"
assert wait_child(client, fallback["job_id"], "fallback")["status"] == "success"
assert wait_final(client, on_success["job_id"])["status"] == "success"
child = wait_child(client, on_success["job_id"], "on_success")
assert child["status"] == "success" and child["url"] == target("httpbin.org/delay/1"), child
print("test-app snippets: racing, HASH dedupe, fallback chain and on_success all work")

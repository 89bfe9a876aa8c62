#!/usr/bin/env python3
"""README "Retry Policies": retry 429/503 in the same region, reroute 500/502/504."""

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final

from ezthrottle import EZThrottle, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

result = (
    Step(client)
    # the stand-in answers 503 twice, then 200: the policy gets it through
    .url(target(f"api.example.com/flaky/503/2?run={RUN_ID}"))
    .retry_policy({
        "max_retries": 5,
        "max_reroutes": 3,
        "retry_codes": [429, 503],  # Retry in same region
        "reroute_codes": [500, 502, 504],  # Try different region
    })
    .execute()
)
print(result)

# -- checked -------------------------------------------------------------------------
view = wait_final(client, result["job_id"])
print([a.get("status_code") for a in view["attempts"]], "retries:", view["retries"])
assert view["status"] == "success", view
assert [a.get("status_code") for a in view["attempts"]] == [503, 503, 200], view["attempts"]
assert view["retries"] == 2 and view["reroutes"] == 0, view

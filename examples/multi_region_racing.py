#!/usr/bin/env python3
"""README "Multi-Region Racing": every region sends, the first completion wins."""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

result = (
    Step(client)
    .url(target("api.example.com"))
    .regions(["iad", "lax", "ord"])  # Try all 3 regions
    .region_policy("fallback")  # Auto-route if region down
    .execution_mode("race")  # First completion wins
    .webhooks([{"url": webhook("app.com/webhook")}])
    .execute()
)
print(result)

# -- checked -------------------------------------------------------------------------
view = wait_final(client, result["job_id"])
print("winner:", view["winner_region"], "regions:", view["regions"])
assert view["status"] == "success", view
assert sorted(view["regions"]) == ["iad", "lax", "ord"], view
assert view["winner_region"] in view["regions"]
wait_webhooks_delivered(client, result["job_id"])

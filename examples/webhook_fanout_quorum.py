#!/usr/bin/env python3
"""README "Webhook Fanout (Multiple Webhooks)": four webhooks, a quorum of two."""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

result = (
    Step(client)
    .url(target("api.stripe.com/charges"))
    .method("POST")
    .webhooks([
        # Primary webhook (must succeed)
        {"url": webhook("app.com/payment-complete"), "has_quorum_vote": True},
        # Analytics webhook (optional)
        {"url": webhook("analytics.com/track"), "has_quorum_vote": False},
        # Notification service (must succeed)
        {"url": webhook("notify.com/alert"), "has_quorum_vote": True},
        # Multi-region webhook racing
        {"url": webhook("backup.com/webhook"), "regions": ["iad", "lax"], "has_quorum_vote": True},
    ])
    .webhook_quorum(2)  # At least 2 webhooks with has_quorum_vote=true must succeed
    .execute()
)
print(result)

# -- checked: the quorum is met, and every webhook is delivered ------------------------
assert wait_final(client, result["job_id"])["status"] == "success"
view = wait_webhooks_delivered(client, result["job_id"])
hooks = view["webhooks"]
print({e["url"].rsplit("/", 2)[-2]: e["state"] for e in hooks["endpoints"]}, "votes:", hooks["votes"])
assert hooks["quorum"] == 2 and hooks["votes"] >= 2, hooks
assert len(hooks["endpoints"]) == 4

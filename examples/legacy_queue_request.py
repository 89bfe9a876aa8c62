#!/usr/bin/env python3
"""README "Legacy API (Deprecated)": ``queue_request()`` still works, with a DeprecationWarning."""

import warnings

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_webhooks_delivered, webhook

from ezthrottle import EZThrottle

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = client.queue_request(
        url=target("api.example.com"),
        webhook_url=webhook("your-app.com/webhook"),  # Note: singular
        method="POST",
    )
print(result)
print(caught[0].category.__name__, caught[0].message)

# -- checked -------------------------------------------------------------------------
assert [w.category for w in caught] == [DeprecationWarning], caught
assert caught[0].filename == __file__  # it points at the caller's line
assert wait_final(client, result["job_id"])["status"] == "success"
view = wait_webhooks_delivered(client, result["job_id"])
assert [e["url"] for e in view["webhooks"]["endpoints"]] == [webhook("your-app.com/webhook")]

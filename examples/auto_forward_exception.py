#!/usr/bin/env python3
"""README "@auto_forward Decorator": legacy code raises ForwardToEZThrottle, the decorator submits it."""

import requests
from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final, webhook

from ezthrottle import EZThrottle, ForwardToEZThrottle, auto_forward

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# The stand-in Stripe answers 429 to the first charge, then 200 (EZThrottle's try).
STRIPE_CHARGES = target(f"api.stripe.com/charges/flaky/429/1?run={RUN_ID}")


@auto_forward(client)
def process_payment(order_id):
    """
    Legacy payment processing code.
    Just raise ForwardToEZThrottle on errors - decorator handles the rest!
    """
    try:
        response = requests.post(
            STRIPE_CHARGES,
            headers={"Authorization": "Bearer sk_live_..."},
            json={"amount": 1000, "currency": "usd"}
        )

        if response.status_code == 429:
            # Decorator catches this and auto-forwards to EZThrottle!
            raise ForwardToEZThrottle(
                url=STRIPE_CHARGES,
                method="POST",
                headers={"Authorization": "Bearer sk_live_..."},
                body='{"amount": 1000, "currency": "usd"}',
                idempotent_key=f"order_{order_id}",
                metadata={"order_id": order_id, "customer_id": "cust_123"},
                webhooks=[{"url": webhook("app.com/payment-complete")}]
            )

        return response.json()

    except requests.RequestException as e:
        # Network errors also auto-forwarded
        raise ForwardToEZThrottle(
            url=STRIPE_CHARGES,
            method="POST",
            idempotent_key=f"order_{order_id}",
            metadata={"error": str(e)}
        )


# Call your legacy function - works exactly the same!
result = process_payment(f"order_12345_{RUN_ID}")
# Returns: {"job_id": "...", "status": "queued"}
print(result)

# -- checked: the 429 was forwarded and EZThrottle charged once ------------------------
assert result["status"] == "queued" and result["idempotent_key"] == f"order_order_12345_{RUN_ID}"
view = wait_final(client, result["job_id"])
assert view["status"] == "success" and view["method"] == "POST", view
assert view["metadata"] == {"order_id": f"order_12345_{RUN_ID}", "customer_id": "cust_123"}

#!/usr/bin/env python3
"""README "Mixed Workflow Chains", Example 2: PERFORMANCE → FRUGAL.

EZThrottle races the payment; it never runs the FRUGAL analytics step. The
step travels back in the payment's webhook, and your app's webhook endpoint
(``https://app.com/payment-complete`` in the README, served here with Flask
and ``WebhookHandler``) runs it, exactly once: a second delivery of the same
webhook finds the step already claimed.
"""

import os

import httpx
from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, serve_wsgi, target, wait_until
from flask import Flask, request

from ezthrottle import EZThrottle, Step, StepType, WebhookHandler
from ezthrottle.adapters.flask import flask_webhook_view

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# -- your app: the webhook endpoint ------------------------------------------------
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET_PRIMARY") or f"example-secret-{RUN_ID}"
client.create_webhook_secret(WEBHOOK_SECRET)  # EZThrottle signs webhooks with it
handler = WebhookHandler(client, secret=WEBHOOK_SECRET)
results = []  # what the handler did with each delivery
deliveries = []  # each delivery as received: (raw body, signature)
handle = flask_webhook_view(handler, on_result=results.append)

app = Flask(__name__)


@app.post("/payment-complete")
def payment_complete():
    deliveries.append((request.get_data(), request.headers.get("X-EZThrottle-Signature")))
    return handle()  # verify, claim the FRUGAL step, run it here


APP_URL, stop_app = serve_wsgi(app)

# -- the README's workflow ----------------------------------------------------------
# Critical payment needs speed (racing)
# But analytics is cheap (local execution when webhook arrives)
payment = (
    Step(client)
    .url(target("api.stripe.com/charges"))
    .type(StepType.PERFORMANCE)  # Fast distributed execution
    .webhooks([{"url": f"{APP_URL}/payment-complete"}])
    .regions(["iad", "lax"])
    .on_success(
        # Analytics doesn't need speed - save money!
        Step(client)
        .url(target("analytics.com/track"))
        .type(StepType.FRUGAL)  # Client executes when webhook arrives
    )
    .execute()
)
print(payment)

# -- checked ---------------------------------------------------------------------------
first = wait_until(lambda: results and results[0], "the payment's webhook")
assert first.job_id == payment["job_id"] and first.status == "success", first.payload
[step] = first.steps
print("first delivery:", step)
assert step.relation == "on_success" and step.status == "ran", step
assert step.result["executed_locally"] is True and step.result["status_code"] == 200, step
assert "/analytics.com/track" in step.result["response"]  # the stand-in echoes the path

# The same webhook delivered again (webhooks are delivered at least once): verified,
# but the step is already claimed, so analytics does not run twice.
body, signature = deliveries[0]
again = httpx.post(
    f"{APP_URL}/payment-complete",
    content=body,
    headers={"X-EZThrottle-Signature": signature, "Content-Type": "application/json"},
)
print("second delivery:", again.json())
assert again.status_code == 200, again.text
assert [s["status"] for s in again.json()["steps"]] == ["already_claimed"], again.json()
assert len(results) == 2 and results[1].steps[0].status == "already_claimed"

# A forged delivery is refused before anything runs.
forged = httpx.post(f"{APP_URL}/payment-complete", content=body, headers={"X-EZThrottle-Signature": "t=1,v1=00"})
assert forged.status_code == 401, forged.text
stop_app()

#!/usr/bin/env python3
"""README "Workflow Chaining": FRUGAL primary → PERFORMANCE notification → FRUGAL analytics.

The analytics step follows a PERFORMANCE step, so EZThrottle never runs it:
it travels back in the notification's webhook, and your app's webhook
endpoint runs it with ``WebhookHandler``. This example serves that endpoint
(``https://app.com/webhook`` in the README) itself, with Flask.
"""

import os

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, serve_wsgi, target, wait_until
from flask import Flask

from ezthrottle import EZThrottle, Step, StepType, WebhookHandler
from ezthrottle.adapters.flask import flask_webhook_view

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# -- your app: the webhook endpoint ------------------------------------------------
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET_PRIMARY") or f"example-secret-{RUN_ID}"
client.create_webhook_secret(WEBHOOK_SECRET)  # EZThrottle signs webhooks with it
handler = WebhookHandler(client, secret=WEBHOOK_SECRET)
received = []
app = Flask(__name__)
app.add_url_rule(
    "/webhook", view_func=flask_webhook_view(handler, on_result=received.append), methods=["POST"]
)
APP_URL, stop_app = serve_wsgi(app)

# -- the README's workflow ----------------------------------------------------------
# Analytics step (cheap)
analytics = Step(client).url(target("analytics.com/track")).type(StepType.FRUGAL)

# Notification (fast, distributed)
notification = (
    Step(client)
    .url(target("notify.com"))
    .type(StepType.PERFORMANCE)
    .webhooks([{"url": f"{APP_URL}/webhook"}])
    .regions(["iad", "lax"])
    .on_success(analytics)
)

# Primary API call (cheap local execution)
result = (
    Step(client)
    .url(target("api.example.com"))
    .type(StepType.FRUGAL)
    .fallback_on_error([429, 500])
    .on_success(notification)
    .execute()
)
print(result)

# -- checked -------------------------------------------------------------------------
assert result["executed_locally"] is True and result["status"] == "success", result
webhook = wait_until(lambda: received and received[0], "the notification's webhook")
assert webhook.status == "success", webhook.payload
assert client.get_job(webhook.job_id)["url"] == target("notify.com")
[step] = webhook.steps  # the FRUGAL analytics step, run here
print(step)
assert step.relation == "on_success" and step.status == "ran", step
assert step.result["executed_locally"] is True and step.result["status_code"] == 200, step
stop_app()

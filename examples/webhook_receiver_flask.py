#!/usr/bin/env python3
"""A Flask webhook receiver with ``WebhookHandler``: verify, then continue the workflow.

The SDK README's webhook examples are Flask; this is the receiver they lead
to, with the SDK's Flask adapter. It verifies the signature (primary and,
during a rotation, secondary secret), claims and runs the FRUGAL steps the
webhook carries, and hands you the outcome in ``on_result``.

Run it: ``python examples/webhook_receiver_flask.py`` serves the app on a free
loopback port and sends it a job whose FRUGAL ``on_success`` step it runs.
"""

import os

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID
from flask import Flask

from ezthrottle import EZThrottle, WebhookHandler
from ezthrottle.adapters.flask import flask_webhook_view

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET_PRIMARY") or f"example-secret-{RUN_ID}"
handler = WebhookHandler(
    client,
    secret=WEBHOOK_SECRET,
    secondary_secret=os.environ.get("WEBHOOK_SECRET_SECONDARY"),  # Optional
)
results = []


def on_result(result):
    """Called for each verified webhook, after its FRUGAL steps ran."""
    results.append(result)
    print(f"job {result.job_id}: {result.status}")
    for step in result.steps:
        print(f"  {step.relation} step {step.step_id}: {step.status}")


app = Flask(__name__)
app.add_url_rule("/webhook", view_func=flask_webhook_view(handler, on_result=on_result), methods=["POST"])


if __name__ == "__main__":
    from _support import serve_wsgi, target, wait_until

    from ezthrottle import Step, StepType

    client.create_webhook_secret(WEBHOOK_SECRET)  # EZThrottle signs webhooks with it
    APP_URL, stop_app = serve_wsgi(app)
    job = (
        Step(client)
        .url(target("api.example.com/orders"))
        .method("POST")
        .body('{"order": 42}')
        .webhooks([{"url": f"{APP_URL}/webhook"}])
        .on_success(Step(client).url(target("analytics.com/track")).type(StepType.FRUGAL))
        .execute()
    )
    # -- checked: the webhook verified, and its FRUGAL step ran here --------------------
    result = wait_until(lambda: results and results[0], "the webhook")
    assert result.job_id == job["job_id"] and result.status == "success", result.payload
    assert [(s.relation, s.status) for s in result.steps] == [("on_success", "ran")], result.steps
    assert result.steps[0].result["executed_locally"] is True
    stop_app()

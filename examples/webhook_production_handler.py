#!/usr/bin/env python3
"""README "Example: Production-Ready Webhook Handler", in the middle of a secret rotation.

EZThrottle first signs with the old secret (the handler's secondary), then
with the new one (its primary): both verify, a forged webhook gets 401.
"""

import logging
import os

os.environ.setdefault("WEBHOOK_SECRET_PRIMARY", "new_secret_after_rotation_min_16")
os.environ.setdefault("WEBHOOK_SECRET_SECONDARY", "old_secret_before_rotation_min_16")

# -- the README's handler ------------------------------------------------------------
from flask import Flask, request  # noqa: E402
from ezthrottle import try_verify_with_secrets, WebhookVerificationError  # noqa: E402,F401

app = Flask(__name__)

PRIMARY_SECRET = os.environ.get('WEBHOOK_SECRET_PRIMARY')
SECONDARY_SECRET = os.environ.get('WEBHOOK_SECRET_SECONDARY')  # Optional

@app.route('/webhook', methods=['POST'])
def webhook():
    # Verify signature
    verified, reason = try_verify_with_secrets(
        payload=request.get_data(),
        signature_header=request.headers.get('X-EZThrottle-Signature', ''),
        primary_secret=PRIMARY_SECRET,
        secondary_secret=SECONDARY_SECRET
    )

    if not verified:
        app.logger.warning(f"Invalid webhook signature: {reason}")
        return {'error': 'Invalid signature'}, 401

    # Signature valid - process webhook
    data = request.json
    job_id = data.get('job_id')
    status = data.get('status')

    app.logger.info(f"Webhook verified ({reason}): job_id={job_id}, status={status}")

    # Your business logic here
    if status == 'success':
        response_data = data.get('response', {})  # noqa: F841
        # Process successful result
    else:
        # Handle failure
        pass

    return {'ok': True}


# -- running it ------------------------------------------------------------------------
if __name__ == "__main__":
    import httpx
    from _support import API_KEY, EZTHROTTLE_URL, serve_wsgi, target, wait_webhooks_delivered

    from ezthrottle import EZThrottle, Step

    logged = []  # the handler's log lines

    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    app.logger.addHandler(Keep())
    app.logger.setLevel(logging.INFO)
    APP_URL, stop_app = serve_wsgi(app)
    client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

    for server_secret, expected in ((SECONDARY_SECRET, "valid_secondary"), (PRIMARY_SECRET, "valid_primary")):
        client.create_webhook_secret(server_secret)  # what EZThrottle signs with
        job = Step(client).url(target("api.example.com")).webhooks([{"url": f"{APP_URL}/webhook"}])
        job = job.idempotent_strategy("unique").execute()
        wait_webhooks_delivered(client, job["job_id"])
        assert f"Webhook verified ({expected}): job_id={job['job_id']}, status=success" in logged, logged

    forged = httpx.post(f"{APP_URL}/webhook", json={"job_id": "x"}, headers={"X-EZThrottle-Signature": "t=1,v1=00"})
    assert forged.status_code == 401 and forged.json() == {"error": "Invalid signature"}
    assert logged[-1].startswith("Invalid webhook signature: both_secrets_failed"), logged[-1]
    stop_app()

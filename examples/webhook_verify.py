#!/usr/bin/env python3
"""README "Webhook Security": verify signatures in Flask, strictly or as a boolean.

Serves the README's handlers (Quick Start step 2, Strict Verification, Boolean
Verification), has EZThrottle deliver a real signed webhook to each, and
checks that a forged one is refused.
"""

import httpx
from _support import API_KEY, EZTHROTTLE_URL, serve_wsgi, target, wait_webhooks_delivered
from flask import Flask, request

from ezthrottle import (
    EZThrottle,
    Step,
    WebhookVerificationError,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)

app = Flask(__name__)

WEBHOOK_SECRET = "your_secure_random_secret_min_16_chars"


# Quick Start, 2. Verify signatures in your webhook handler
@app.route('/webhook', methods=['POST'])
def webhook():
    # Get signature from header
    signature = request.headers.get('X-EZThrottle-Signature', '')
    payload = request.get_data()

    # Verify signature (raises exception if invalid)
    try:
        verify_webhook_signature_strict(payload, signature, WEBHOOK_SECRET)
    except WebhookVerificationError as e:
        return {'error': str(e)}, 401

    # Signature valid - process webhook
    data = request.json
    print(f"Job {data['job_id']} completed: {data['status']}")

    return {'ok': True}


# Verification Methods, 1. Strict Verification (Recommended)
@app.post('/webhook-strict')
def webhook_strict():
    try:
        verify_webhook_signature_strict(
            payload=request.get_data(),
            signature_header=request.headers.get('X-EZThrottle-Signature', ''),
            secret=WEBHOOK_SECRET,
            tolerance=300  # 5 minutes (default)
        )
        # Signature valid!
    except WebhookVerificationError as e:
        return {'error': f'Invalid signature: {str(e)}'}, 401
    return {'ok': True}


# Verification Methods, 2. Boolean Verification
@app.post('/webhook-bool')
def webhook_bool():
    verified, reason = verify_webhook_signature(
        payload=request.get_data(),
        signature_header=request.headers.get('X-EZThrottle-Signature', ''),
        secret=WEBHOOK_SECRET
    )

    if not verified:
        print(f"Verification failed: {reason}")
        return {'error': 'Invalid signature'}, 401
    return {'ok': True}


if __name__ == "__main__":
    client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
    client.create_webhook_secret(primary_secret=WEBHOOK_SECRET)
    APP_URL, stop_app = serve_wsgi(app)
    routes = ("webhook", "webhook-strict", "webhook-bool")
    job = (
        Step(client)
        .url(target("api.example.com"))
        .webhooks([{"url": f"{APP_URL}/{route}"} for route in routes])
        .webhook_quorum(3)
        .execute()
    )
    # -- checked: all three handlers accepted the real webhook (answered 200) --------
    view = wait_webhooks_delivered(client, job["job_id"])
    assert [e["state"] for e in view["webhooks"]["endpoints"]] == ["delivered"] * 3, view["webhooks"]
    # ... and each refuses a forged or unsigned one, with the README's reasons.
    body = b'{"job_id": "job_forged", "status": "success"}'
    for route in routes:
        for headers in ({"X-EZThrottle-Signature": "t=1700000000,v1=forged"}, {}):
            answer = httpx.post(f"{APP_URL}/{route}", content=body, headers=headers)
            assert answer.status_code == 401, (route, answer.text)
    print(verify_webhook_signature(body, "", WEBHOOK_SECRET))
    assert verify_webhook_signature(body, "", WEBHOOK_SECRET) == (False, "no_signature_header")
    assert verify_webhook_signature(body, "t=1", WEBHOOK_SECRET) == (False, "missing_v1_signature")
    stop_app()

#!/usr/bin/env python3
"""README "Webhook Payload": the payload EZThrottle POSTs, and a plain Flask handler for it.

This handler does not verify signatures; see webhook_production_handler.py.
"""

from _support import API_KEY, EZTHROTTLE_URL, serve_wsgi, target, wait_final, wait_webhooks_delivered
from flask import Flask, request

from ezthrottle import EZThrottle, Step

app = Flask(__name__)
received = []  # (not in the README) what arrived, for the check below


@app.route('/webhook', methods=['POST'])
def handle_webhook():
    payload = request.json
    received.append(payload)
    job_id = payload['job_id']
    status = payload['status']

    if status == 'success':
        response_body = payload['response']['body']
        # Process successful result
        print(f"Job {job_id} succeeded: {response_body}")
    else:
        # Handle failure
        print(f"Job {job_id} failed")

    return {'ok': True}


if __name__ == "__main__":
    APP_URL, stop_app = serve_wsgi(app)
    client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
    ok = Step(client).url(target("api.example.com")).webhooks([{"url": f"{APP_URL}/webhook"}])
    ok = ok.metadata({"order": "42"}).execute()
    failed = (
        Step(client)
        .url(target("api.example.com/status/404"))  # not retried: the job fails
        .webhooks([{"url": f"{APP_URL}/webhook"}])
        .execute()
    )
    # -- checked: both webhooks arrived, in the README's shape -------------------------
    for job in (ok, failed):
        wait_final(client, job["job_id"])
        wait_webhooks_delivered(client, job["job_id"])
    by_job = {p["job_id"]: p for p in received}
    success, failure = by_job[ok["job_id"]], by_job[failed["job_id"]]
    for payload in (success, failure):
        assert {"job_id", "idempotent_key", "status", "response", "metadata"} <= set(payload), payload
    assert success["status"] == "success" and success["response"]["status_code"] == 200
    assert isinstance(success["response"]["body"], str) and success["metadata"] == {"order": "42"}
    assert success["response"]["headers"]["content-type"].startswith("application/json")
    assert failure["status"] == "failed" and failure["response"]["status_code"] == 404
    stop_app()

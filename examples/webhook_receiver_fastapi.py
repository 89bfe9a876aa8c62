#!/usr/bin/env python3
"""README "Integration with FastAPI Webhook Handler", with ``WebhookHandler``.

``/webhook`` is the SDK's FastAPI adapter: it verifies the signature (401
otherwise), runs any FRUGAL step the webhook carries (once, however often it
is delivered), then stores the result as the README does. ``/submit`` and
``/result/{idempotent_key}`` are the README's.

Run it: ``python examples/webhook_receiver_fastapi.py`` serves the app on a
free loopback port, submits a job through ``/submit`` and polls ``/result``
until the webhook has arrived. ``uvicorn webhook_receiver_fastapi:app`` works
too (set ``WEBHOOK_SECRET_PRIMARY`` and ``APP_URL``, where EZThrottle reaches it).
"""

import os
import time
from datetime import datetime

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target
from fastapi import FastAPI

from ezthrottle import EZThrottle, Step, StepType, WebhookHandler
from ezthrottle.adapters.fastapi import fastapi_webhook_route

app = FastAPI()
client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
APP_URL = os.environ.get("APP_URL", "http://127.0.0.1:8000")  # where EZThrottle reaches this app
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET_PRIMARY") or f"example-secret-{RUN_ID}"
handler = WebhookHandler(client, secret=WEBHOOK_SECRET)

# In-memory store for webhook results (use Redis/DB in production)
webhook_results = {}


def store_result(result):
    """Receive webhooks from EZThrottle (called once the signature verified)"""
    data = result.payload
    job_id = data.get("job_id")
    idempotent_key = data.get("idempotent_key")
    status = data.get("status")
    response = data.get("response")

    # Store result
    webhook_results[idempotent_key] = {
        "job_id": job_id,
        "status": status,
        "response": response,
        "received_at": datetime.now(),
        "frugal_steps": [step.as_dict() for step in result.steps],  # what the handler ran
    }

    print(f"Webhook received for {idempotent_key}: {status}")


app.add_api_route("/webhook", fastapi_webhook_route(handler, on_result=store_result), methods=["POST"])


@app.post("/submit")
async def submit_job():
    """Submit job and return immediately"""
    idempotent_key = f"job_{int(time.time() * 1000)}"

    result = (
        Step(client)
        .url(target("api.example.com/endpoint"))
        .method("POST")
        .type(StepType.PERFORMANCE)
        .webhooks([{"url": f"{APP_URL}/webhook", "has_quorum_vote": True}])
        .idempotent_key(idempotent_key)
        .execute()
    )

    # Return immediately, don't wait for webhook
    return {
        "job_id": result["job_id"],
        "idempotent_key": idempotent_key,
        "message": "Job submitted, webhook will arrive asynchronously"
    }


@app.get("/result/{idempotent_key}")
async def get_result(idempotent_key: str):
    """Poll for webhook result"""
    result = webhook_results.get(idempotent_key)
    if result:
        return {"found": True, "result": result}
    else:
        return {"found": False, "message": "Webhook not yet received"}


if __name__ == "__main__":
    import httpx
    from _support import serve_asgi, wait_until

    client.create_webhook_secret(WEBHOOK_SECRET)  # EZThrottle signs webhooks with it
    APP_URL, stop_app = serve_asgi(app)
    submitted = httpx.post(f"{APP_URL}/submit").json()
    print(submitted)

    def result():
        found = httpx.get(f"{APP_URL}/result/{submitted['idempotent_key']}").json()
        return found if found["found"] else None

    # -- checked: the signed webhook arrived and is stored --------------------------------
    stored = wait_until(result, "the webhook of the submitted job")["result"]
    print(stored)
    assert stored["job_id"] == submitted["job_id"] and stored["status"] == "success", stored
    assert stored["response"]["status_code"] == 200
    forged = httpx.post(f"{APP_URL}/webhook", json={"job_id": "x"}, headers={"X-EZThrottle-Signature": "t=1,v1=0"})
    assert forged.status_code == 401, forged.text
    stop_app()

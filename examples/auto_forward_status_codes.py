#!/usr/bin/env python3
"""README "Auto-Forward Decorator" (test-app/app.py:246-256): no ForwardToEZThrottle needed.

With ``fallback_on_error``, an HTTP error that ``raise_for_status()`` raises
with a listed code is forwarded, rebuilt from the failed request. Network
errors (connection failures, timeouts) are forwarded in both forms, from
requests and from httpx, in sync and async functions.
"""

import asyncio

import httpx
import requests
from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final

from ezthrottle import EZThrottle, auto_forward

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)


@auto_forward(client, fallback_on_error=[429, 500])
def legacy_api_call():
    # the stand-in answers 429 to this request, and 200 to EZThrottle's
    response = requests.get(target(f"httpbin.org/flaky/429/1?run={RUN_ID}"))
    response.raise_for_status()  # Raises on 429
    return response.json()


# Automatically forwards to EZThrottle on error!
result = legacy_api_call()
print("429:", result)


# Not in the README: network errors are forwarded too (here, a read timeout).
@auto_forward(client)
def slow_call():
    return requests.get(target(f"httpbin.org/delay/1?run={RUN_ID}"), timeout=0.2).json()


@auto_forward(client)
async def slow_call_async():
    async with httpx.AsyncClient(timeout=0.2) as http:
        return (await http.post(target(f"httpbin.org/delay/1?async={RUN_ID}"), content="hi")).json()


timed_out = slow_call()
timed_out_async = asyncio.run(slow_call_async())
print("timeout (requests):", timed_out)
print("timeout (httpx, async):", timed_out_async)

# -- checked: each failed call became a job, and EZThrottle got it through ------------
for job, method in ((result, "GET"), (timed_out, "GET"), (timed_out_async, "POST")):
    assert job["status"] == "queued", job
    view = wait_final(client, job["job_id"])
    assert view["status"] == "success" and view["method"] == method, view

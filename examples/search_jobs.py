#!/usr/bin/env python3
"""Listing and searching your jobs: ``client.list_jobs(...)`` and ``client.get_domain(host)``.

``list_jobs`` is a generator over every job of your API key that matches the
filters, newest first; it follows the server's pages (``GET /api/v1/jobs``,
``next_cursor``) for you. Filters: ``status``, ``domain``,
``created_after``/``created_before`` (ms), ``metadata`` (exact match) and
``root_job_id`` (a workflow).
"""

import time
from urllib.parse import urlsplit

from _support import API_KEY, EZTHROTTLE_URL, RUN_ID, target, wait_final, wait_until

from ezthrottle import EZThrottle

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)
started_ms = int(time.time() * 1000) - 1

# Five orders, tagged with metadata you can search by
orders = [
    client.submit_job(
        target(f"api.example.com/orders/{i}"),
        "POST",
        body=f'{{"order": {i}}}',
        metadata={"batch": RUN_ID, "order_id": f"A-{i}", "priority": i % 2},
    )["job_id"]
    for i in range(5)
]
# and a two-step workflow: the order, then its receipt
workflow = client.submit_job(
    target("api.example.com/orders/workflow"),
    "POST",
    metadata={"batch": RUN_ID, "order_id": "W-1"},
    on_success={"url": target("api.example.com/receipts/W-1"), "method": "POST", "metadata": {"batch": RUN_ID}},
)["job_id"]
for job_id in [*orders, workflow]:
    wait_final(client, job_id)

wait_until(lambda: len(list(client.list_jobs(metadata={"batch": RUN_ID}, status="success"))) == 7, "the receipt job to succeed")

# Every job of this batch, newest first, two per page (the generator follows the pages)
batch = list(client.list_jobs(metadata={"batch": RUN_ID}, limit=2))
for job in batch:
    print(f"{job['job_id']}  {job['status']:<9} {job['method']} {job['url']}  {job['metadata'].get('order_id', '')}")

# One order by its id; the odd-priority ones that succeeded; everything since the example started
[a3] = client.list_jobs(metadata={"batch": RUN_ID, "order_id": "A-3"})
odd = list(client.list_jobs(metadata={"batch": RUN_ID, "priority": 1}, status="success"))
recent = list(client.list_jobs(created_after=started_ms, domain=urlsplit(target("x")).netloc))
print(f"A-3 is {a3['job_id']} ({a3['status']}); odd priority: {len(odd)}; since the start, to this domain: {len(recent)}")

# The workflow: its root and the job it started
steps = list(client.list_jobs(root_job_id=workflow))
print("workflow:", [(j["job_id"], (j["workflow"] or {}).get("relation")) for j in steps])

# What this customer sees of the target's domain: its limit, any pause, its jobs there not yet final
domain = client.get_domain(urlsplit(target("x")).netloc)
print(f"{domain['domain']}: {domain['limit']['rps']}/s ({domain['limit']['rps_source']}), paused={domain['paused']}, jobs={domain['jobs']}")

# -- checked -----------------------------------------------------------------------------
assert len(batch) == 7 and len({j["job_id"] for j in batch}) == 7, batch
positions = [(j["created_at_ms"], j["job_id"]) for j in batch]
assert positions == sorted(positions, reverse=True), "newest first"
assert set(orders) < {j["job_id"] for j in batch} and all(j["status"] == "success" for j in batch), batch
assert a3["job_id"] == orders[3] and a3["metadata"]["order_id"] == "A-3"
assert sorted(j["job_id"] for j in odd) == sorted([orders[1], orders[3]]), odd
assert {j["job_id"] for j in batch} <= {j["job_id"] for j in recent}
assert len(steps) == 2 and steps[-1]["job_id"] == workflow and steps[0]["workflow"]["relation"] == "on_success", steps
assert domain["jobs"] == {"queued": 0, "in_flight": 0, "complete": True} and domain["circuit"]["state"] == "closed"
assert domain["flow_control_keys"] == []
print("listed, searched and paged")

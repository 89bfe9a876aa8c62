#!/usr/bin/env python3
"""Run a job on a schedule, instead of a loop that submits and sleeps.

``Step.schedule(every_s=...)`` (or ``cron="*/5 * * * *", timezone=...``)
hands the step to EZThrottle: its coordinator fires each tick once, as an
ordinary job (paced, retried, webhooks), linked to the schedule. With
``overlap="skip"`` a tick is skipped while the last job has not ended.
"""

import time

from _support import API_KEY, EZTHROTTLE_URL, target, wait_final, wait_until

from ezthrottle import EZThrottle, NotFoundError, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# A heartbeat to a partner API every second.
heartbeat = Step(client).url(target("api.example.com/heartbeat")).method("POST").body('{"alive": true}').schedule(every_s=1)
schedule_id = heartbeat["schedule_id"]
print(f"schedule {schedule_id}: next tick at {heartbeat['next_fire_at_ms']}")

# A nightly report at 2:00 in Paris (daylight saving included): shown, then removed.
nightly = client.create_schedule(Step().url(target("api.example.com/reports/nightly")), cron="0 2 * * *", timezone="Europe/Paris")
assert nightly["cron"] == "0 2 * * *" and nightly["next_fire_at_ms"] > time.time() * 1000, nightly

# -- checked: ticks become jobs linked to the schedule --------------------------------
fired = wait_until(lambda: (s := client.get_schedule(schedule_id))["fired_count"] >= 2 and s, "two ticks")
job = wait_final(client, fired["last_job_id"])
assert job["status"] == "success" and job["schedule_id"] == schedule_id, job
assert job["idempotent_key"].startswith(f"sched:{schedule_id}:"), job
print(f"fired {fired['fired_count']} jobs; the last: {job['job_id']} ({job['status']})")

paused = client.pause_schedule(schedule_id)
assert paused["paused"] and paused["next_fire_at_ms"] is None, paused
assert {s["schedule_id"] for s in client.list_schedules()} == {schedule_id, nightly["schedule_id"]}
for sid in (schedule_id, nightly["schedule_id"]):
    client.delete_schedule(sid)
try:
    client.get_schedule(schedule_id)
except NotFoundError:
    print("deleted")
else:
    raise AssertionError("the schedule is still there")

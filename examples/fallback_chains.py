#!/usr/bin/env python3
"""README "Fallback Chains": when the primary API fails with 500, EZThrottle runs the backup."""

from _support import API_KEY, EZTHROTTLE_URL, target, wait_child, wait_final

from ezthrottle import EZThrottle, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

backup_api = Step(client).url(target("backup-api.com"))

result = (
    Step(client)
    .url(target("primary-api.com/status/500"))  # the stand-in primary is down: it answers 500
    .fallback(backup_api, trigger_on_error=[500, 502, 503])
    .execute()
)
print(result)

# -- checked: the primary failed, the backup (a job of its own) succeeded -------------
primary = wait_final(client, result["job_id"])
assert primary["status"] == "failed" and primary["result"]["status_code"] == 500, primary
backup = wait_child(client, result["job_id"], "fallback")
print("backup:", backup["job_id"], backup["status"])
assert backup["status"] == "success" and backup["url"] == target("backup-api.com"), backup
assert client.get_job(backup["job_id"])["workflow"]["parent_job_id"] == result["job_id"]

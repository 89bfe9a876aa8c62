"""A lease held in one Redis key: ``renew_lease.lua`` and ``release_lease.lua``.

The coordinator's leadership (``keys.coordinator_leader``), an unsafe job's
send lease (``keys.send_lease``), a delivery region's liveness
(``keys.delivery_region_alive``) and a bulk action's runner
(``keys.bulk_lease``) are each such a lease: a holder id with a TTL.
"""

from __future__ import annotations

from .scripting import ScriptRun


async def renew(run: ScriptRun, lease: str, *, holder: str, ttl_ms: int) -> bool:
    """Keep the lease, or take it if nobody holds it: True while ``holder`` holds it after the call."""
    return int(await run(keys=[lease], args=[holder, ttl_ms])) == 1


async def release(run: ScriptRun, lease: str, *, holder: str) -> bool:
    """Give the lease up if ``holder`` holds it: True when it did."""
    return int(await run(keys=[lease], args=[holder])) == 1

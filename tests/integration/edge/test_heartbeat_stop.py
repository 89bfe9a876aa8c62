"""A stopping edge's heartbeat ends when it is cancelled, whatever it was waiting for at that moment.

The heartbeat waits (at most a second) for a probe result to change. A
cancel that arrives in the same loop turn as that change must still end it:
Python 3.11's ``asyncio.wait_for`` returned the waited-for result instead
and let the loop go on beating, so the edge's cleanup (which gathers the
cancelled heartbeat) never finished, about one graceful stop in thirty in
``test_graceful_stop.py``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from ezthrottle_server.edge import app as edge_app

pytestmark = pytest.mark.asyncio


def _ctx(redis, changed: asyncio.Event) -> SimpleNamespace:
    settings = SimpleNamespace(node_id="edge-beat-test", region="iad", advertised_url="http://127.0.0.1:1")
    return SimpleNamespace(
        settings=settings,
        redis=redis,
        worker=SimpleNamespace(inflight=0),
        outcomes=SimpleNamespace(snapshot=dict),
        prober=SimpleNamespace(changed=changed, snapshot=dict),
    )


@pytest.mark.parametrize("turns", range(6))
async def test_a_heartbeat_cancelled_as_a_probe_result_changes_ends(redis, turns):
    changed = asyncio.Event()
    beat = asyncio.create_task(edge_app._heartbeat(_ctx(redis, changed)))
    await asyncio.sleep(0.05)  # waiting for a change (or a second)
    changed.set()
    for _ in range(turns):  # the cancel lands at each step of the wake-up
        await asyncio.sleep(0)
    beat.cancel()
    try:
        done, _pending = await asyncio.wait([beat], timeout=3)
        assert done == {beat} and beat.cancelled()
    finally:
        while not beat.done():  # the old code's beat swallowed the cancel: stop it for good
            beat.cancel()
            await asyncio.wait([beat], timeout=0.1)

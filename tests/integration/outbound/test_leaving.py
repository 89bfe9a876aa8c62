"""The executor tells a send when it leaves: once, on its first hop, after the pacer let it go (edge/executor.py).

``left(late_ms)`` is how the pacer learns that a send reached the wire later
than ``space.lua`` allowed it (a connection to make first), so that the sends
after it count from then (tests/integration/pacing/test_strict_target.py).
"""

from __future__ import annotations

import pytest

from ezthrottle_server.edge.context import CTX
from support.redis_server import free_port

pytestmark = pytest.mark.asyncio


async def test_left_is_told_once_after_before_on_the_first_hop_of_a_redirect(edge, target):
    executor = edge.app[CTX].executor
    events: list[tuple[str, float]] = []

    async def before() -> None:
        events.append(("before", 0.0))

    sent = await executor.send(
        "GET", f"{target.url}/redirect?to=/echo&code=302", {}, None, before=before, left=lambda late: events.append(("left", late))
    )
    assert sent.status_code == 200
    assert [r.path for r in target.requests] == ["/redirect", "/echo"]  # two hops
    assert [name for name, _ in events] == ["before", "left"]
    assert events[1][1] >= 0.0


async def test_a_send_that_never_connects_does_not_leave_and_leaves_nothing_behind(edge, target):
    executor = edge.app[CTX].executor
    told: list[float] = []
    refused = await executor.send("GET", f"http://127.0.0.1:{free_port()}/", {}, None, left=told.append)
    assert refused.error_kind == "connection" and told == []
    # the same task's next send, told nothing: the first one's callback is not carried over to it
    sent = await executor.send("GET", f"{target.url}/echo", {}, None)
    assert sent.status_code == 200 and told == []
    again: list[float] = []
    await executor.send("GET", f"{target.url}/echo", {}, None, left=again.append)
    assert len(again) == 1 and told == []

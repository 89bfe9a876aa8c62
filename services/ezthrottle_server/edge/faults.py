"""Fault injection, for tests only: an outbound path that a test can break.

An edge uses :class:`FaultyExecutor` only when ``Settings.test_outbound_fault``
is set, a field that nothing reads from the environment or regions.yaml:
only tests construct settings with it (``start_edge("lax",
test_outbound_fault=True)``). While ``broken`` is set, every send from that
edge, customers' jobs and health probes alike, fails the way a cut network
fails: a connection error, nothing sent. While ``hang`` is set, every send
waits out its timeout and fails with no answer, as behind a firewall that
drops packets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .executor import CONNECTION, TIMEOUT, AttemptResult, Executor


class FaultyExecutor(Executor):
    broken: bool = False
    hang: bool = False

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: str | None,
        timeout_s: float | None = None,
        *,
        before: Callable[[], Awaitable[Any]] | None = None,
        left: Callable[[float], None] | None = None,
    ) -> AttemptResult:
        if self.hang:
            wait_s = timeout_s or self.settings.attempt_timeout_s
            await asyncio.sleep(wait_s)
            return AttemptResult(error_kind=TIMEOUT, error=f"no answer within {wait_s:g}s (injected fault: packets dropped)")
        if self.broken:
            return AttemptResult(error_kind=CONNECTION, error="ClientConnectorError: injected fault: this node's outbound path is broken")
        return await super().send(method, url, headers, body, timeout_s, before=before, left=left)

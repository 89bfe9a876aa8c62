"""Waiting for a job's final state, without I/O: what each event means.

``client.wait(job_id, timeout_s)`` follows ``GET /api/v1/jobs/{id}/events``
(``text/event-stream``). Each event is ``event: <type>`` and ``data: <json>``:

- ``snapshot`` comes first, with the job view; a job already final ends the wait
  (final: ``success``, ``failed``, ``cancelled``, ``expired``);
- ``completed`` / ``failed`` end it: their data is the job view, or at least
  ``job_id`` and ``status``, in which case the view is fetched once;
- ``queued``, ``scheduled``, ``dispatching``, ``attempt``, ``won``,
  ``delivered``, ``quorum_met`` are progress; ``: keep-alive`` comments too.

If the stream route answers 404 while the job exists (an edge without event
streams), the clients poll ``GET /api/v1/jobs/{id}`` instead, with a backoff
from ``POLL_FIRST_S`` doubling up to the caller's ``poll_interval_s``.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from ._sse import ServerSentEvent, SSEParser
from .exceptions import TimeoutError

FINAL_STATUSES = frozenset({"success", "failed", "cancelled", "expired"})
FINAL_EVENTS = frozenset({"completed", "failed"})
POLL_FIRST_S = 0.05
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# Keys that make event data a whole job view (as GET /api/v1/jobs/{id} answers).
_VIEW_KEYS = frozenset({"job_id", "status", "result", "attempts"})


@dataclass(frozen=True)
class Finished:
    """The wait is over: ``view`` is the final job view, or None to fetch it once."""

    view: Optional[dict[str, Any]]


class JobWatch:
    """Reads a job's events; says when the job is final."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last_status: Optional[str] = None

    def feed(self, event: ServerSentEvent) -> Optional[Finished]:
        data = _json_object(event.data)
        status = data.get("status") if data else None
        if isinstance(status, str):
            self.last_status = status
        if event.event == "snapshot":
            if data is not None and status in FINAL_STATUSES:
                return Finished(data)
            return None
        if event.event in FINAL_EVENTS:
            if event.event == "failed" and status is not None and status not in FINAL_STATUSES:
                return None  # one attempt failed and the job goes on (retry, reroute)
            whole = data is not None and data.keys() >= _VIEW_KEYS and status in FINAL_STATUSES
            return Finished(data if whole else None)
        return None

    def timeout_message(self, timeout_s: float) -> str:
        status = f" (last status: {self.last_status})" if self.last_status else ""
        return f"job {self.job_id} did not finish within {timeout_s:g}s{status}"


class StreamReader:
    """Reads one connection of a job's event stream, chunk by chunk."""

    def __init__(self, watch: JobWatch, deadline: float, timeout_s: float) -> None:
        self._watch = watch
        self._deadline = deadline  # time.monotonic()
        self._timeout_s = timeout_s
        self._parser = SSEParser()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finished: Optional[Finished] = None

    def feed(self, chunk: bytes) -> bool:
        """True once the job is final (stop reading); ``TimeoutError`` past the deadline."""
        for event in self._parser.feed(self._decoder.decode(chunk)):
            self.finished = self._watch.feed(event)
            if self.finished is not None:
                return True
        if time.monotonic() >= self._deadline:
            raise TimeoutError(self._watch.timeout_message(self._timeout_s))
        return False


def backoff_s(first_s: float, cap_s: float) -> Iterator[float]:
    """``first_s``, doubling, capped at ``cap_s``: the sleeps between polls or reconnects."""
    delay = min(first_s, cap_s)
    while True:
        yield delay
        delay = min(delay * 2, cap_s)


def is_final(view: dict[str, Any]) -> bool:
    return view.get("status") in FINAL_STATUSES


def _json_object(text: str) -> Optional[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

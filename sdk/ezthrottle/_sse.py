"""A small parser for ``text/event-stream`` (server-sent events).

It follows the WHATWG "event stream interpretation" rules: lines end with
CRLF, LF or CR (a CRLF split across two chunks is one line end); a leading
BOM is dropped; lines starting with ``:`` are comments (keep-alives); a
field is ``name: value`` (one space after the colon is dropped) or a bare
``name``; ``data`` lines are joined with ``\\n``; ``id`` sets the last event
id unless it contains NUL; ``retry`` (the reconnection delay, kept until changed) takes ASCII digits only; unknown fields
are ignored; a blank line dispatches the event, unless it has no data.

It is fed text as it arrives and returns complete events, so the caller
sees every chunk (keep-alives included) and can check its own deadline in
between; ``httpx-sse`` hides the chunks behind its event iterator, which is
why this module exists instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["ServerSentEvent", "SSEParser"]


@dataclass(frozen=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str = ""
    retry_ms: Optional[int] = None


class SSEParser:
    """Incremental parser: ``feed(text)`` returns the events completed by ``text``."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its CRLF
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""
        self._retry_ms: Optional[int] = None

    @property
    def last_event_id(self) -> str:
        """For ``Last-Event-ID`` when reconnecting."""
        return self._last_id

    @property
    def retry_ms(self) -> Optional[int]:
        """The reconnection delay the server asked for, if any."""
        return self._retry_ms

    def feed(self, text: str) -> list[ServerSentEvent]:
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        events: list[ServerSentEvent] = []
        buffer = self._buffer + text
        start = 0
        length = len(buffer)
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            end = min(i for i in (cr, lf) if i >= 0)
            line = buffer[start:end]
            if buffer[end] == "\r":
                if end + 1 < length:
                    start = end + 2 if buffer[end + 1] == "\n" else end + 1
                else:
                    start = end + 1
                    self._skip_lf = True
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> Optional[ServerSentEvent]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry_ms = int(value)
        return None

    def _dispatch(self) -> Optional[ServerSentEvent]:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self._last_id, self._retry_ms)

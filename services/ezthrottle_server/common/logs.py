"""JSON structured logs, one object per line on stderr.

Pass job context with ``extra={"job_id": ..., "region": ..., "domain": ...}``;
those keys are copied into the line (``node`` is the process's own). ``domain``
is the ``host:port`` a line's request goes to: the job's target on an edge,
the webhook on a delivery worker. Never log secrets, API keys or bodies; as a
last guard, anything shaped like an API key or a bearer token is masked.

Lines below WARNING logged inside a running event loop are written at the end
of its turn, together (:class:`TurnBufferedHandler`): a busy service logs a
few lines per job, and one write per line was a syscall each. Warnings and
errors, and lines logged outside a loop, are written at once (after anything
buffered before them). A process killed mid-turn loses that turn's INFO lines
at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from typing import TextIO

import orjson

_CONTEXT_KEYS = ("job_id", "region", "node", "domain", "customer", "webhook", "status_code", "reason", "attempt")
_SECRET_SHAPES = re.compile(r"(ezt_live_|[Bb]earer\s+)[A-Za-z0-9._~+/=-]{6,}")


def _mask(text: str) -> str:
    if "ezt_live_" not in text and "earer" not in text:  # neither shape can match: no regex run (most lines)
        return text
    return _SECRET_SHAPES.sub(r"\1[redacted]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, node: str) -> None:
        super().__init__()
        self.service = service
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "node": self.node,
            "logger": record.name,
            "msg": _mask(record.getMessage()),
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = _mask(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TurnBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one event-loop turn in one write."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if record.levelno >= logging.WARNING or loop is None:
            self.flush()
        elif self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_on = None
            if self._lines:
                text = "".join(self._lines)
                self._lines.clear()
                with contextlib.suppress(Exception):  # as StreamHandler: a broken stderr must not take the service down
                    self.stream.write(text)
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()
        finally:
            self.release()


def setup_logging(service: str, node: str, level: str = "INFO") -> None:
    # A record's thread and process fields are never written (JsonFormatter): not looked up for each line;
    # nor its source file, line and function (no stack walk per line: about a quarter of a line's cost).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the documented way off (logging/__init__.py)
    handler = TurnBufferedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

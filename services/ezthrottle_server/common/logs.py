"""JSON structured logs, one object per line on stderr.

Pass job context with ``extra={"job_id": ..., "region": ..., "domain": ...}``;
those keys are copied into the line (``node`` is the process's own). ``domain``
is the ``host:port`` a line's request goes to: the job's target on an edge,
the webhook on a delivery worker. Never log secrets, API keys or bodies; as a
last guard, anything shaped like an API key or a bearer token is masked.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

_CONTEXT_KEYS = ("job_id", "region", "node", "domain", "customer", "webhook", "status_code", "reason", "attempt")
_SECRET_SHAPES = re.compile(r"(ezt_live_|[Bb]earer\s+)[A-Za-z0-9._~+/=-]{6,}")


def _mask(text: str) -> str:
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


def setup_logging(service: str, node: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

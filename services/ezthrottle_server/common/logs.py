"""JSON structured logs, one object per line on stderr.

Pass job context with ``extra={"job_id": ..., "region": ..., "domain": ...}``;
those keys are copied into the line. Never log secrets, API keys or bodies.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_CONTEXT_KEYS = ("job_id", "region", "node", "domain", "customer", "webhook", "status_code", "reason", "attempt")


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
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(service: str, node: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

"""Logging for ``streampi serve``: one line per event, as text or as JSON lines.

Text (the default) reads well on a terminal and in ``journalctl``::

    streampi: INFO: serving mobilenet_v2_int8 (3f2a…) with 4 process workers

JSON lines (``--log-json``) are for log shippers: one object per line with ``ts`` (UTC,
ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, ``pid``, ``exc`` (the
formatted exception, when there is one) and any ``extra={...}`` fields the call passed.

Either way an event is exactly one line: a traceback is folded into the line (text) or into
the ``exc`` string (JSON), so that journald and line-based shippers never split one event
into several records.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error", "critical")

# attributes every LogRecord has; anything else on a record came from ``extra=``
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in event and not key.startswith("_"):
                event[key] = value
        # default=str: an extra field that JSON cannot hold is logged as its text, never dropped
        return json.dumps(event, default=str, ensure_ascii=False)


class OneLineFormatter(logging.Formatter):
    """``streampi: LEVEL: message``, with any traceback folded into the same line (the JSON
    lines name the logger too)."""

    def __init__(self) -> None:
        super().__init__("streampi: %(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for text in extra:
            line += " | " + " | ".join(part.strip() for part in text.splitlines() if part.strip())
        return line.replace("\n", " | ").replace("\r", " ")


_HANDLER_NAME = "streampi"


def setup(level: str | int = "info", json: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Send every ``logging`` record at ``level`` or above to ``stream`` (stderr), one line each.

    Idempotent: a second call replaces the handler of the first (worker processes and tests
    may call it again). Warnings from :mod:`warnings` go through the same handler.
    """
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        level = getattr(logging, level.upper())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonLinesFormatter() if json else OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler

"""JSON log lines on stderr. Callers pass fields explicitly; nothing here ever serialises headers or bodies."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .jsonutil import dumps, iso_ms

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


class Logger:
    def __init__(self, level: str = "info", stream: TextIO | None = None) -> None:
        self.threshold = LEVELS.get(level.lower(), 20)
        self.stream = stream

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {"ts": iso_ms(), "level": level, "event": event}
        record.update(fields)
        stream = self.stream or sys.stderr
        try:
            stream.write(dumps(record).decode("utf-8") + "\n")
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must never take a request down with it.
            pass

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

"""The admin audit trail, and aggregated logging of public-plane denials.

Audit records go to a dedicated JSON-lines file (opened ``O_APPEND``, fsynced after each mutation)
and to the process log with ``"event": "audit"``. Public-plane denials are never written one per
request: a flood must not be able to fill the disk. The first denial after a quiet spell is logged
with its details, the rest are counted and summarised once per interval.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

from ..jsonutil import dumps, iso_ms
from ..log import Logger


class AuditLog:
    def __init__(self, path: str | None, log: Logger, *, enabled: bool = True) -> None:
        self.path = path
        self.log = log
        self.enabled = enabled

    def record(self, *, outcome: str, reason: str, sync: bool = False, **fields: Any) -> bool:
        """One audit record. ``outcome`` is success, failure or denied; ``reason`` a short code.

        ``sync`` (mutations) fsyncs the file before returning, so an acknowledged change is on record.
        False when the file could not take the line (full, read-only): a change must then not be made.
        """
        if not self.enabled:
            return True
        record: dict[str, Any] = {"ts": iso_ms(), "event": "audit", "outcome": outcome, "reason": reason}
        record.update((k, v) for k, v in fields.items() if v is not None)
        level = "info" if outcome == "success" else "warning"
        self.log.log(level, "audit", **{k: v for k, v in record.items() if k not in ("ts", "event")})
        return self.path is None or self._append(dumps(record) + b"\n", sync)

    def _append(self, line: bytes, sync: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, "the audit line was written only in part")
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            self.log.error("audit_write_failed", path=self.path, error=e.strerror or str(e))
            return False
        return True


class DenialLog:
    """Logs public-plane denials at most once per ``interval`` seconds (plus one summary)."""

    def __init__(self, log: Logger, interval: float = 10.0) -> None:
        self.log = log
        self.interval = interval
        self.pending: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def denied(self, plane: str, reason: str, **detail: Any) -> None:
        if self._timer is None:
            self.log.warning("plane_access_denied", plane=plane, reason=reason,
                             **{k: v for k, v in detail.items() if v is not None})
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)
            return
        key = f"{plane}/{reason}"
        self.pending[key] = self.pending.get(key, 0) + 1

    def _flush(self) -> None:
        if not self.pending:
            self._timer = None  # quiet: the next denial is logged in full again
            return
        counts, self.pending = self.pending, {}
        self.log.warning("plane_access_denied_summary", intervalS=self.interval, denials=counts,
                         total=sum(counts.values()))
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

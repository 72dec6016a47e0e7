"""The managed access file: the runtime-editable policy, its version, and safe concurrent changes.

Every change holds an ``fcntl.flock`` on ``<file>.lock``, checks that the file is still the one we
loaded (same SHA-256: no external edit since), checks the caller's expected version, and replaces the
file atomically (``fsutil.atomic_write_text``). A second router sharing the file, or an operator's
editor, therefore never has its change silently overwritten: the loser gets 409 and must reload.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
from dataclasses import replace
from typing import Callable, Iterable, Iterator

from ..config.parse import dump_managed_access, parse_managed_file
from ..config.reader import ConfigError
from ..config.schema import ManagedAccess
from ..errors import HttpError
from ..fsutil import atomic_write_text
from ..jsonutil import iso_ms


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class ManagedStore:
    def __init__(self, path: str, inline: ManagedAccess, *, bootstrap: bool) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with self._locked(blocking=True):
                self._remove_stale_temp_files()
                data = self._read()
                if data is None:
                    if not bootstrap:
                        raise ConfigError(f"Managed access file not found: {path} (access.bootstrapIfMissing is false)")
                    data = self._write(inline)
        except OSError as e:
            raise ConfigError(f"Cannot use the managed access file {path}: {e.strerror or e}") from None
        self.warnings: tuple[str, ...] = ()  # the file's unknown keys, as of the last read
        self.current = self._parse(data)
        self.digest = _digest(data)

    def reload(self) -> ManagedAccess:
        """Read the file again (SIGHUP). A broken file raises ConfigError and changes nothing."""
        data = self._read()
        if data is None:
            raise ConfigError(f"Managed access file not found: {self.path}")
        self.current = self._parse(data)
        self.digest = _digest(data)
        return self.current

    def mutate(self, change: Callable[[ManagedAccess], ManagedAccess], expected: Iterable[int] = (),
               before_write: Callable[[ManagedAccess, ManagedAccess], None] = lambda old, new: None,
               ) -> tuple[ManagedAccess, ManagedAccess]:
        """Apply ``change`` to the current policy, bump the version and persist it; returns (old, new).

        ``change`` may raise HttpError (bad input, unknown key), and so may ``before_write`` (the audit
        record of the change, written first: a change that cannot be audited is not made). Nothing awaits
        in here, so changes from this process never interleave; the file lock keeps other processes out.
        """
        with self._locked(blocking=False):
            if _digest(self._read()) != self.digest:
                raise HttpError(409, "The managed access file was changed on disk since it was loaded;"
                                     " reload it (SIGHUP) and retry", code="managed_file_changed")
            old = self.current
            for version in expected:
                if version != old.version:
                    raise HttpError(409, f"Access config version mismatch: expected {version}, current {old.version}",
                                    code="version_mismatch")
            new = replace(change(old), version=old.version + 1, updated_at=iso_ms())
            before_write(old, new)
            try:
                data = self._write(new)
            except OSError as e:
                raise HttpError(500, f"Cannot write the managed access file: {e.strerror or e}",
                                code="managed_file_write_failed") from None
            self.current, self.digest = new, _digest(data)
            return old, new

    def _parse(self, data: bytes) -> ManagedAccess:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: not a UTF-8 text file") from None
        managed, self.warnings = parse_managed_file(text, self.path)
        return managed

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, managed: ManagedAccess) -> bytes:
        data = dump_managed_access(managed)
        atomic_write_text(self.path, data, mode=0o600)
        return data.encode("utf-8")

    @contextlib.contextmanager
    def _locked(self, *, blocking: bool) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                # Never wait on the event loop: another process holds the lock for one write only.
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                raise HttpError(409, "The managed access file is being changed by another process; retry",
                                code="managed_file_locked") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a writer killed mid-write (under the lock, so none is in use)."""
        target = os.path.realpath(self.path)
        pattern = os.path.join(glob.escape(os.path.dirname(target)), f".{glob.escape(os.path.basename(target))}.*.tmp")
        for stale in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)

"""Crash-safe replacement of a file: temp file in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets

# Filesystems that cannot fsync a directory say so with one of these; the rename itself has happened.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def atomic_write_text(path: str, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so that readers see either the old or the new file, never a mix.

    The temp file sits in the target's directory because ``os.replace`` is only atomic within one
    filesystem. On any failure the temp file is removed and the error re-raised; the target is untouched.
    """
    # Write through a symlink to the file it points at instead of replacing the link.
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with open(fd, "wb") as f:
            # O_CREAT's mode is filtered by the umask; the caller asked for an exact mode.
            os.fchmod(f.fileno(), mode)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: str) -> None:
    """Make the rename durable: the new directory entry survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)

"""Atomic file writes: temp file in the target directory, fsync, then link or rename.

A crash at any moment leaves either the old file or the new one under the final name,
never a half-written file. Without `force` an existing file is never replaced, and the
check is race-free (hard link fails if the name appeared meanwhile).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import OutputError


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail early (before any heavy work) if `path` cannot be written."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(path, "already exists (use --force to overwrite)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(path, f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(path, f"directory {parent} is not writable")
    return path


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None],
                 force: bool = False, mode_from: str | os.PathLike | None = None) -> None:
    """Write bytes (or call `data(fileobj)`) to `path` atomically.

    `mode_from` copies permission bits from another file (used when replacing a JPEG in place).
    """
    path = check_writable(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    except OSError as e:
        raise OutputError(path, f"cannot create a file here: {e.strerror}") from None
    try:
        os.close(fd)
        with open(tmp, "wb") as f:  # a named file object: tifffile wants a real name
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode_from is not None:
            os.chmod(tmp, os.stat(mode_from).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        _publish(tmp, path, force)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if e.errno == errno.EEXIST:
            raise OutputError(path, "already exists (use --force to overwrite)") from None
        raise OutputError(path, f"cannot write: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _publish(tmp: str, path: Path, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST if someone created `path` meanwhile
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            if path.exists():
                raise OSError(errno.EEXIST, "exists") from None
            os.replace(tmp, path)  # filesystem without hard links
            return
        raise
    os.unlink(tmp)

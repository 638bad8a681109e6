"""Atomic file writes: nothing a user saves is ever left half-written.

``write_atomic(path, write)`` lets ``write(handle)`` fill a temporary file beside ``path``,
flushes it to disk, gives it an ordinary file's mode (tempfile makes it 0600), renames it
over ``path`` with ``os.replace`` and syncs the folder. A crash at any point leaves the old
file or the new one and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomic(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically with ``write(binary_handle)``; returns the path."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_text_atomic(path: PathLike, text: str) -> Path:
    """:func:`write_atomic` for UTF-8 text (newlines written as given)."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

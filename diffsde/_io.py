"""Atomic file writes, a rename that never replaces, and our temporaries found again after a kill.

``write_atomic(path, write)`` lets ``write(handle)`` fill a temporary file beside ``path``,
flushes it to disk, gives it an ordinary file's mode (tempfile makes it 0600), renames it
over ``path`` with ``os.replace`` and syncs the folder. An error or Ctrl-C leaves the old file
or the new one and no temporary file behind.

A kill the process cannot catch (SIGKILL, power loss) can still leave a temporary. Every
temporary diffsde makes is named ``.NAME.PID.XXXXXXXX.KIND`` (KIND ``tmp`` for these files,
``partial`` and ``old`` for :class:`diffsde._output.OutputFolder`'s folders), PID being the
process that owns it. :func:`stale_temporaries` finds those whose owner is gone: not this
process, no live process with that PID, and last modified before this process started. Each
write of ``NAME`` removes its own stale ``.NAME.*.tmp`` siblings first, so the next save in
that folder cleans what a killed one left. (A process in another PID namespace sharing the
folder, e.g. another container, looks dead from here; its temporaries are spared while they
are newer than this process.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["write_atomic", "write_text_atomic", "rename_noreplace", "temporary_prefix", "stale_temporaries",
           "Temporary", "STARTED"]

STARTED = time.time()  # when this process loaded diffsde: older temporaries of dead owners are stale

# .NAME.PID.XXXXXXXX.KIND, XXXXXXXX being tempfile's 8 random characters.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.(?P<token>[a-z0-9_]{8})\.(?P<kind>tmp|partial|old)$")


def write_atomic(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically with ``write(binary_handle)``; returns the path.

    Stale temporaries of earlier writes of the same name (their process is gone) are removed first.
    """
    path = Path(path)
    for stale in stale_temporaries(path.parent, name=path.name, kinds=("tmp",)):
        try:
            stale.path.unlink()
        except OSError:  # gone meanwhile, or not ours to delete: the write goes on
            pass
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp",
                                         delete=False)
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


def temporary_prefix(name: str) -> str:
    """``.NAME.PID.``: the start of this process's temporaries for ``NAME`` (tempfile adds the rest)."""
    return f".{name}.{os.getpid()}."


class Temporary(NamedTuple):
    """One of our temporaries: ``path`` is ``parent/.NAME.PID.TOKEN.KIND``."""

    path: Path
    name: str
    pid: int
    token: str
    kind: str


def stale_temporaries(folder: PathLike, name: str | None = None,
                      kinds: tuple[str, ...] = ("tmp", "partial", "old")) -> Iterator[Temporary]:
    """Our temporaries in ``folder`` (of ``name`` only, if given) whose owner is gone: not this
    process, no live process with that PID (``os.kill(pid, 0)``), modified before this process
    started. Nothing is yielded where liveness cannot be told (not POSIX) or the folder cannot
    be read."""
    if os.name != "posix":
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or match["kind"] not in kinds or (name is not None and match["name"] != name):
            continue
        pid = int(match["pid"])
        try:
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if pid != os.getpid() and modified < STARTED and not _alive(pid):
            yield Temporary(Path(entry.path), match["name"], pid, match["token"], match["kind"])


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists (True when that cannot be told: never delete then)."""
    if pid <= 0:
        return True  # os.kill(0, ...) would address a process group: not a PID we wrote
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def rename_noreplace(source: PathLike, target: PathLike) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (then FileExistsError, nothing moved).

    On Linux this is one atomic system call, ``renameat2(..., RENAME_NOREPLACE)``: a folder that
    appears at ``target`` at any moment is never replaced. Elsewhere, or on a filesystem without
    that flag, it is a check followed by ``os.rename``; POSIX ``rename`` refuses a non-empty folder
    and Windows any existing name, so in the instant between the two only an EMPTY folder that
    appears at ``target`` could be replaced (no data is lost then either).
    """
    source, target = os.fspath(source), os.fspath(target)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), target)
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not "this filesystem lacks the flag"
            raise OSError(code, os.strerror(code), source, None, target)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        raise


def _load_renameat2():
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2 = _load_renameat2()


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

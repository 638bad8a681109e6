"""The ``diffsde`` process: stop signals become one exception, and short sections are not cut.

SIGINT (Ctrl-C), SIGTERM and SIGHUP all raise :class:`Interrupted` (a ``KeyboardInterrupt``)
inside :func:`stop_signals_raise`, so one ``try``/``finally`` path cleans up whatever stopped
the run; the command then exits with ``128 + signal number`` (130, 143, 129), as a shell
reports a process killed by that signal. A signal that arrives inside :func:`signals_deferred`
(a few renames that must happen together) is held and raised when the section ends.
:func:`quiet_exit_on_signals` makes a stop signal after the work is done exit at once, with
one line and no traceback. Standard library only: the entry point uses this before ``import torch``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["Interrupted", "stop_signals_raise", "signals_deferred", "quiet_exit_on_signals", "exit_status",
           "describe_stop", "STOP_SIGNALS"]

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM or SIGHUP) delivered to the process; ``signum`` is its number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(stop: BaseException) -> int:
    """128 + the signal's number (130 for Ctrl-C, SIGINT, or a plain KeyboardInterrupt)."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


def describe_stop(stop: BaseException) -> str:
    """``"interrupted"`` for Ctrl-C; ``"stopped by SIGTERM"`` for the others."""
    signum = getattr(stop, "signum", signal.SIGINT)
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


_deferring = 0
_pending: list[int] = []


def _raise_interrupted(signum, frame) -> None:
    if _deferring:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def stop_signals_raise(restore: bool = True) -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`; the previous
    handlers are restored after it (unless ``restore`` is False: the entry point keeps them to the
    end). A signal the process ignores (``nohup`` ignores SIGHUP) stays ignored. Outside the main
    thread (where Python runs no handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN and handler is not _raise_interrupted:
                previous[signum] = signal.signal(signum, _raise_interrupted)
        yield
    finally:
        for signum, handler in previous.items() if restore else ():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold stop signals (those :func:`stop_signals_raise` turns into :class:`Interrupted`) until
    the block ends, then raise the first one held: the block's steps happen all or none."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)


def quiet_exit_on_signals(program: str) -> None:
    """From now on, a stop signal prints ``PROGRAM: interrupted`` (one line) and exits at once with
    128 + its number: for the moments after the work is done, when nothing is left to clean up."""
    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum, frame):
        try:
            sys.stdout.flush()
        finally:
            print(f"{program}: {describe_stop(Interrupted(signum))}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, leave)

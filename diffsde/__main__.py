"""The ``diffsde`` command's entry point (``python -m diffsde`` runs it too).

It answers ``--version`` without importing torch, and turns stop signals into one line and an
exit status (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP) from before ``import torch`` to
the end: the command itself, with its cleanup, is :func:`diffsde.cli.main`.
"""

from __future__ import annotations

import sys
from typing import Sequence

from . import __version__
from ._process import describe_stop, exit_status, quiet_exit_on_signals, stop_signals_raise

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffsde`` command with ``argv``; returns the exit status.

    Called without ``argv`` (as the ``diffsde`` script and ``python -m diffsde`` call it) it reads
    ``sys.argv`` and owns the process: its signal handlers stay to the end, and a stop signal after
    the work is done exits at once. Called with ``argv`` it restores the caller's handlers.
    """
    owns_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"diffsde {__version__}")
        return 0
    try:
        with stop_signals_raise(restore=not owns_process):
            from .cli import main as run  # imports torch: seconds, during which Ctrl-C is one line too
            status = run(argv)
    except KeyboardInterrupt as stop:
        if owns_process:
            quiet_exit_on_signals("diffsde")
        print(f"diffsde: {describe_stop(stop)}", file=sys.stderr)
        return exit_status(stop)
    if owns_process:
        quiet_exit_on_signals("diffsde")  # the work is done: a late Ctrl-C exits at once, in one line
    return status

if __name__ == "__main__":
    raise SystemExit(main())

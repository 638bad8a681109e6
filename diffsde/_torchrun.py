"""The ``diffsde`` command under ``torchrun``: one process group per run, rank 0 prints and writes.

``torchrun --nproc-per-node=K -m diffsde sample|compare|converge|train ...`` starts K copies of
the command with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
:func:`process_group` initialises the group from it (gloo on the CPU, NCCL with ``--device
cuda``, collectives bounded by ``--dist-timeout``), silences the other ranks' standard output and
progress bars, and destroys the group at the end. Started without torchrun, nothing here touches
``torch.distributed``: the command runs exactly as a single process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from ._output import OutputFolder, OutputFolderError
from .distributed.world import all_gather_objects, init_from_env, under_launcher, world

__all__ = ["SCALED_COMMANDS", "process_group", "rank_label", "output_folder", "let_rank_0_report"]

#: The commands that spread their work over torchrun's processes.
SCALED_COMMANDS = ("sample", "compare", "converge", "train")


def rank_label() -> str:
    """`` (rank r)`` for a rank other than 0 of a torchrun launch (its messages say which process),
    else the empty string."""
    rank = os.environ.get("RANK", "0") if under_launcher() else "0"
    return "" if rank == "0" else f" (rank {rank})"


#: Seconds a failing rank other than 0 waits before it exits (see :func:`let_rank_0_report`).
REPORT_GRACE_S = 3.0


def let_rank_0_report() -> None:
    """On a failing rank other than 0 of a torchrun launch, wait a moment before reporting and exiting.

    torchrun stops every process as soon as one exits with an error, so a refusal that every rank
    reaches at once (an existing output folder, settings that differ between ranks) would often
    reach the user from rank 1 alone, with rank 0's own message cut off. Waiting lets rank 0 report
    and exit first (torchrun then ends this wait: one line for the user); a rank that fails alone
    reports after the wait, and rank 0 then stops with the lost connection."""
    if rank_label():
        time.sleep(REPORT_GRACE_S)


@contextlib.contextmanager
def process_group(args: argparse.Namespace) -> Iterator[None]:
    """The command's process group when torchrun started it (refused for commands that do not
    scale, with more than one process); nothing otherwise."""
    if not under_launcher():
        yield
        return
    from .commands import CliError  # imported here: commands imports this module

    size = os.environ.get("WORLD_SIZE", "1")
    if args.command not in SCALED_COMMANDS and size != "1":
        raise CliError(f"`diffsde {args.command}` runs in one process; under torchrun only "
                       f"{', '.join(SCALED_COMMANDS)} spread their work (start it without torchrun)")
    current = init_from_env(args.device, args.dist_timeout)
    try:
        if current.is_main:
            yield
        else:
            args.progress = False
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class _ScratchFolder:
    """A rank other than 0's stand-in for the output folder: a private temporary folder, removed at
    the end, so the command's code runs unchanged while only rank 0 writes the real one."""

    target: Path | None = None

    def __enter__(self) -> Path:
        self.target = Path(tempfile.mkdtemp(prefix="diffsde-rank-"))
        return self.target

    def __exit__(self, kind, error, trace) -> bool:
        shutil.rmtree(self.target, ignore_errors=True)  # type: ignore[arg-type]
        return False


def output_folder(target, force: bool, parents: bool, record: dict):
    """:class:`OutputFolder` on rank 0, decided before any work: its refusal (the folder exists,
    ...) stops every rank, rank 0 with the refusal and the others naming it. The other ranks get a
    scratch folder. Without a process group: the :class:`OutputFolder` itself."""
    current = world()
    if not current.distributed:
        return OutputFolder(target, force, parents=parents, record=record)
    folder, refusal = None, None
    if current.is_main:
        try:
            folder = OutputFolder(target, force, parents=parents, record=record)
        except OutputFolderError as err:
            refusal = err
    verdict = all_gather_objects(None if refusal is None else str(refusal), "the check of the output folder")[0]
    if refusal is not None:
        raise refusal
    if verdict is not None:
        raise OutputFolderError(f"rank 0 refused the output folder: {verdict}")
    return folder if current.is_main else _ScratchFolder()

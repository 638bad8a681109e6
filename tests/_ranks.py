"""Run a function on several gloo ranks on this machine, for the tests of :mod:`diffsde.distributed`.

``run_ranks(worker, 2, args)`` spawns two fresh Python processes (torch.multiprocessing's "spawn"
start method: nothing of the parent's threads or state is inherited), initialises a gloo process
group across them over a free local TCP port, calls ``worker(*args)`` on each and returns the
ranks' results in rank order. ``worker`` must be a module-level function (spawn pickles it by
name) and its result picklable by ``torch.save``.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

__all__ = ["run_ranks", "RankOutcome"]


class RankOutcome:
    """One rank's outcome: ``value`` (what the worker returned) or ``error`` (the exception's type
    name and message), and the process's exit code."""

    def __init__(self, value=None, error: tuple[str, str] | None = None, exitcode: int | None = None):
        self.value, self.error, self.exitcode = value, error, exitcode

    def __repr__(self) -> str:
        return f"RankOutcome(value={self.value!r}, error={self.error!r}, exitcode={self.exitcode})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(worker, rank: int, world_size: int, port: int, args: tuple, folder: str, timeout_s: float,
           init: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    outcome: dict
    try:
        if init:
            torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size,
                                                 timeout=datetime.timedelta(seconds=timeout_s))
        outcome = {"value": worker(*args)}
    except BaseException as err:  # reported to the parent, which decides what the test expects
        outcome = {"error": (type(err).__name__, str(err)), "traceback": traceback.format_exc()}
    finally:
        if init and torch.distributed.is_initialized():
            try:
                torch.distributed.destroy_process_group()
            except Exception:
                pass
    torch.save(outcome, Path(folder) / f"rank{rank}.pt")


def run_ranks(worker, world_size: int = 2, args: tuple = (), *, timeout_s: float = 30.0,
              wait_s: float = 180.0, init: bool = True, expect_errors: bool = False) -> list:
    """``[worker(*args) on rank r for r in range(world_size)]`` over a gloo group (``init=False``:
    the workers get torchrun's environment variables but no group, and initialise it themselves).

    ``timeout_s`` is the group's collective timeout; ``wait_s`` bounds the whole run (processes
    still alive then are killed and the test fails). With ``expect_errors`` the list holds
    :class:`RankOutcome` objects; otherwise a rank's error fails the call with its traceback.
    """
    context = mp.get_context("spawn")
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        processes = [context.Process(target=_entry, args=(worker, rank, world_size, port, args, folder,
                                                          timeout_s, init), daemon=True)
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=wait_s)
        for process in processes:
            process.join(max(0.0, (deadline - datetime.datetime.now()).total_seconds()))
        hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        if hung:
            raise AssertionError(f"ranks {hung} were still running after {wait_s} s (a hang)")
        outcomes = []
        for rank, process in enumerate(processes):
            path = Path(folder) / f"rank{rank}.pt"
            saved = torch.load(path, weights_only=False) if path.exists() else {"error": ("Died", "no result")}
            outcomes.append((saved, process.exitcode))
    if expect_errors:
        return [RankOutcome(saved.get("value"), saved.get("error"), code) for saved, code in outcomes]
    failures = [f"rank {rank}: {saved.get('traceback', saved['error'])}" for rank, (saved, _) in enumerate(outcomes)
                if "error" in saved]
    if failures:
        raise AssertionError("\n".join(failures))
    return [saved["value"] for saved, _ in outcomes]

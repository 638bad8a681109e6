"""The process group a run belongs to, and the few collectives diffsde uses.

diffsde scales out on PyTorch's own engine: ``torch.distributed``, launched by ``torchrun``
(gloo on the CPU, NCCL on CUDA; multi-node through torchrun's rendezvous). A run is
distributed exactly when a default process group is initialised (by :func:`init_from_env`, as
the ``diffsde`` command does under torchrun, or by the user); otherwise every function here
acts for a world of one process and touches no part of ``torch.distributed``.

Collectives carry the group's timeout (``init_from_env(timeout_s=...)``), so a rank that fails
mid-run makes the others stop with :class:`DistributedError` instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["World", "DistributedError", "world", "init_from_env", "under_launcher", "shard_range",
           "all_gather_objects", "all_reduce_sum", "check_same", "same_across_ranks", "map_cells", "barrier",
           "DEFAULT_TIMEOUT_S"]

#: Seconds a collective waits for the other ranks before :class:`DistributedError` (init_from_env's default).
DEFAULT_TIMEOUT_S = 600.0

_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """The ranks of a run could not work together: inconsistent settings across ranks, or a rank
    that failed, exited or stopped answering (the collective's timeout passed)."""


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` in [0, ``size``), and whether a process group exists."""

    rank: int = 0
    size: int = 1
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes (rank 0)."""
        return self.rank == 0


def world() -> World:
    """This process's :class:`World`: from the default process group when one is initialised,
    else rank 0 of 1 (torch.distributed untouched)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return World()
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(), True)


def under_launcher(environ: dict | None = None) -> bool:
    """Whether this process was started by torchrun (or a launcher setting the same variables:
    RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."""
    environ = os.environ if environ is None else environ
    return "WORLD_SIZE" in environ and "RANK" in environ


def _env_int(environ: dict, name: str, minimum: int) -> int:
    raw = environ.get(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise DistributedError(f"the launcher set {name}={raw!r}; it must be an int >= {minimum} "
                               f"(start the run with torchrun)") from None
    if value < minimum:
        raise DistributedError(f"the launcher set {name}={value}; it must be an int >= {minimum}")
    return value


def init_from_env(device: torch.device | str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
                  environ: dict | None = None) -> World:
    """Initialise the default process group from torchrun's environment and return the :class:`World`.

    The backend is NCCL for a CUDA ``device`` (each rank then uses ``cuda:LOCAL_RANK``) and gloo
    otherwise; ``timeout_s`` bounds every collective. Refused with :class:`DistributedError` when
    the variables are missing or inconsistent (RANK outside [0, WORLD_SIZE), LOCAL_RANK beyond the
    visible GPUs), and with ValueError for a timeout that is not a positive number of seconds.
    """
    environ = os.environ if environ is None else environ
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    missing = [name for name in _LAUNCHER_VARIABLES if name not in environ]
    if missing:
        raise DistributedError(f"not started by torchrun: {', '.join(missing)} unset; launch with "
                               f"`torchrun --nproc-per-node=K -m diffsde ...`")
    size = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0)
    local_rank = _env_int(environ, "LOCAL_RANK", 0)
    if rank >= size:
        raise DistributedError(f"inconsistent world settings: RANK={rank} is not below WORLD_SIZE={size}")
    device = torch.device(device)
    backend = "gloo"
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local_rank} but this node sees {torch.cuda.device_count()} "
                                   f"GPU(s); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)),
                                             rank=rank, world_size=size)
    return world()


def shard_range(count: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous share of ``count`` items split over ``size`` ranks: items
    ``[rank·count // size, (rank + 1)·count // size)``; shares differ by at most one item."""
    return range(rank * count // size, (rank + 1) * count // size)


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn a failed or timed-out collective into one clear :class:`DistributedError`."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as err:  # gloo/NCCL errors (DistBackendError is a RuntimeError)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(f"rank {rank}: lost the other ranks during {what} (another rank failed, exited or "
                               f"did not answer within the timeout; see its message): {first_line}") from None


def all_gather_objects(value: Any, what: str = "a gather") -> list:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank ([value] alone
    in a world of one, with or without a process group)."""
    current = world()
    if current.size == 1:
        return [value]
    gathered: list = [None] * current.size
    with _collective(what):
        torch.distributed.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(tensor: Tensor, what: str = "a sum") -> Tensor:
    """``tensor`` summed over the ranks, in place, and returned (unchanged in a world of one).
    The sum's order of additions is the backend's; float sums can differ from a serial sum in the
    last bits, integer sums cannot."""
    if world().size > 1:
        with _collective(what):
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def barrier(what: str = "a barrier") -> None:
    """Wait until every rank reaches this point (nothing in a world of one)."""
    if world().size > 1:
        with _collective(what):
            torch.distributed.barrier()


def check_same(value: Any, name: str) -> None:
    """Refuse (:class:`DistributedError`, on every rank) a setting that differs between ranks,
    e.g. a seed or a sample count given differently to each process."""
    same_across_ranks(all_gather_objects(value, f"the check that every rank has the same {name}"), name)


def same_across_ranks(values: list, name: str, hint: str = "") -> None:
    """Refuse (:class:`DistributedError`) gathered ``values`` (one per rank, in rank order) that are
    not all equal, naming each rank's value; for dicts, naming the (dotted) entries that differ."""
    if all(other == values[0] for other in values):
        return
    if all(isinstance(other, dict) for other in values):  # name the entries that differ, not the whole dict
        values = [_flat(other) for other in values]
        keys = sorted({key for other in values for key in other}, key=str)
        differing = [key for key in keys if any(other.get(key) != values[0].get(key) for other in values)]
        listing = "; ".join(f"{key}: " + ", ".join(f"rank {rank}: {reprlib.repr(other.get(key))}"
                                                   for rank, other in enumerate(values)) for key in differing)
        raise DistributedError(f"inconsistent world settings: the {name} differ between ranks in "
                               f"{', '.join(map(str, differing))} ({listing}); every rank must be given the same"
                               f"{hint}")
    listing = ", ".join(f"rank {rank}: {reprlib.repr(other)}" for rank, other in enumerate(values))
    raise DistributedError(f"inconsistent world settings: {name} differs between ranks ({listing}); "
                           f"every rank must be given the same {name}{hint}")


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys ({"a": {"b": 1}} -> {"a.b": 1})."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        flat.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def map_cells(function: Callable[[Any], Any], cells: Sequence) -> list:
    """``[function(cell) for cell in cells]``, computed with the cells dealt round-robin over the
    ranks (cell i on rank i mod size) and returned in order on every rank. Cells must be
    independent (each draws its own random numbers from its own seeds), so the list equals the
    serial one whatever the world size. A cell that raises stops its rank with that error; the
    other ranks then stop with :class:`DistributedError`."""
    current = world()
    if current.size == 1:
        return [function(cell) for cell in cells]
    mine = {index: function(cells[index]) for index in range(current.rank, len(cells), current.size)}
    merged: dict = {}
    for part in all_gather_objects(mine, f"the merge of {len(cells)} independent cells"):
        merged.update(part)
    return [merged[index] for index in range(len(cells))]

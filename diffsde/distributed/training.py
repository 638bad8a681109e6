"""What :func:`diffsde.training.train` does differently under a process group.

One global batch of ``config.batch_size`` rows per step, drawn whole on every rank from the
run's generator (the same on every rank) and split into contiguous row blocks, one per rank;
the network runs inside ``torch.nn.parallel.DistributedDataParallel``, which averages the
ranks' gradients during ``backward``
(https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html).
The average of the ranks' local mean losses is the global batch's mean loss, so a W-rank run
equals the one-process run with the same config up to float32 round-off.

:class:`DataParallel` holds the few steps that talk to the other ranks: the agreement before
the first step (every rank's checks passed and its settings are the same), the wrapping in
DDP, the errors of DDP's own collectives during a step, the batched loss average and the
checkpoint writes (rank 0 writes, every rank learns the outcome). Each collective carries the
group's timeout, so a rank that fails makes the others stop with
:class:`~diffsde.distributed.world.DistributedError` instead of waiting forever. Nothing here is
used without a process group.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .world import DistributedError, World, _collective, all_gather_objects, all_reduce_sum, world

__all__ = ["DataParallel", "generator_fingerprint"]

# What a gloo / NCCL failure looks like: torch's DistBackendError (torch >= 2.1; gloo often raises a
# plain RuntimeError instead), or a RuntimeError naming the backend, a closed connection or a timeout.
_BACKEND_WORDS = ("gloo", "nccl", "c10d", "connection closed", "connection reset", "timed out", "timeout")


def generator_fingerprint(generator: torch.Generator) -> str:
    """A short SHA-256 of ``generator``'s state (its seed and position), comparable across ranks."""
    return hashlib.sha256(generator.get_state().cpu().numpy().tobytes()).hexdigest()[:16]


def _describe(error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


class DataParallel:
    """Rank ``rank`` of ``size`` training one global batch together (see the module's docstring).

    ``reduced`` is the number of steps whose losses have already been averaged over the ranks.
    """

    def __init__(self, current: World):
        self.rank, self.size = current.rank, current.size
        self.reduced = 0

    @classmethod
    def of_world(cls) -> "DataParallel | None":
        """The run's :class:`DataParallel` under a process group, else None (no group: nothing to do)."""
        current = world()
        return cls(current) if current.distributed else None

    # -- before the first step ---------------------------------------------------------------------

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the ranks."""
        if batch_size % self.size:
            raise ValueError(f"batch_size = {batch_size} must be a multiple of the world size {self.size}: the "
                             f"global batch is split evenly over the ranks (e.g. batch_size = "
                             f"{max(self.size, batch_size - batch_size % self.size)})")

    def agree(self, settings: dict | None, error: Exception | None = None) -> None:
        """One gather before the first step: every rank tells whether its own checks failed (``error``)
        and, if not, its ``settings`` (name -> a comparable value).

        A rank whose checks failed returns here and re-raises its own error; the others raise
        :class:`DistributedError` naming that rank and its error. When every rank passed, settings
        that differ between ranks raise :class:`DistributedError` on every rank, naming them.
        """
        mine = (None if error is None else _describe(error), settings)
        gathered = all_gather_objects(mine, "the checks before training")
        if error is not None:
            return
        refused = [(rank, problem) for rank, (problem, _) in enumerate(gathered) if problem is not None]
        if refused:
            rank, problem = refused[0]
            raise DistributedError(f"rank {rank} refused the run before any step ({problem}); every rank must be "
                                   f"able to start: the same arguments, and a file system all ranks share for "
                                   f"checkpoints")
        differ = [name for name in settings if any(other[name] != settings[name] for _, other in gathered)]
        if differ:
            listing = "; ".join(f"{name}: " + ", ".join(f"rank {rank}: {other[name]!r}"
                                                        for rank, (_, other) in enumerate(gathered))
                                for name in differ)
            verb = "differs" if len(differ) == 1 else "differ"
            raise DistributedError(f"inconsistent world settings: {', '.join(differ)} {verb} between ranks "
                                   f"({listing}); every rank must be given the same config, seed or generator "
                                   f"state, model, data and checkpoint arguments")

    def wrap(self, forward: nn.Module, model: nn.Module, ema_model: nn.Module, step: int) -> nn.Module:
        """``forward`` (the model, or its ``torch.compile`` wrapper) inside DDP, which broadcasts rank 0's
        weights and buffers into ``model``; a fresh run's EMA (``step`` 0) is then re-copied from them.
        Losses are averaged from ``step`` on (the earlier ones came from the checkpoint).

        ``find_unused_parameters=True`` keeps DDP's gradient buckets as built here: by default DDP
        re-orders them after its first step, and with 3 or more ranks the all-reduce's order of
        additions follows a gradient's place in its bucket, so the first step after a resume would
        differ in the last bits from the uninterrupted run's. The price is one walk over the autograd
        graph per step, and a one-time note from DDP that no unused parameters were found.
        """
        with _collective("the wrapping of the model in DistributedDataParallel (rank 0's weights are broadcast)"):
            wrapped = nn.parallel.DistributedDataParallel(forward, find_unused_parameters=True)
        if step == 0:
            ema_model.load_state_dict(model.state_dict())
        self.reduced = step
        return wrapped

    # -- during the run ----------------------------------------------------------------------------

    def rows(self, batch: int, step: int) -> slice:
        """This rank's contiguous rows ``[r·batch/W, (r + 1)·batch/W)`` of the global batch of step ``step``."""
        if batch % self.size:
            raise ValueError(f"data batch {step} has B = {batch} rows, not a multiple of the world size {self.size}: "
                             f"every batch is split evenly over the ranks")
        share = batch // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    @contextlib.contextmanager
    def collectives(self, what: str) -> Iterator[None]:
        """Turn a failed or timed-out collective inside (DDP's buffer broadcast in the forward, its
        gradient all-reduce in the backward) into one clear :class:`DistributedError`; any other
        error (the model's own, say) passes unchanged."""
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as err:
            text = str(err).strip()
            if not (isinstance(err, torch.distributed.DistBackendError)
                    or any(word in text.lower() for word in _BACKEND_WORDS)):
                raise
            first_line = text.splitlines()[0] if text else type(err).__name__
            raise DistributedError(f"rank {self.rank}: lost the other ranks during {what} (another rank failed, "
                                   f"exited or did not answer within the timeout; see its message): "
                                   f"{first_line}") from None

    def average_losses(self, recent: Tensor, step: int) -> None:
        """Replace the local losses ``recent[reduced:step]`` by their average over the ranks (the
        global batch's losses), in place, with one all-reduce for all of them."""
        if step > self.reduced:
            part = recent[self.reduced:step]
            all_reduce_sum(part, f"the average of the losses of steps {self.reduced}..{step - 1}").div_(self.size)
            self.reduced = step

    def on_main(self, action: Callable[[], Any], what: str) -> None:
        """Run ``action`` on rank 0 only (e.g. a checkpoint write); every rank waits for it and stops
        if it failed (rank 0 with its own error, the others with :class:`DistributedError`)."""
        error = None
        if self.rank == 0:
            try:
                action()
            except Exception as err:  # every rank must learn it before rank 0 raises
                error = err
        outcomes = all_gather_objects(None if error is None else _describe(error), what)
        if error is not None:
            raise error
        if outcomes[0] is not None:
            raise DistributedError(f"rank 0 failed {what} ({outcomes[0]}); every rank stops")

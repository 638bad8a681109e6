"""Sampling sharded across the ranks of a process group, with samples that do not depend on how many.

An int seed names a sample set whose sample i depends only on (seed, i)
(:mod:`diffsde.samplers.chunks`: counter-based noise, chunks of 16 384 rows). :func:`sample`
deals whole chunks to the ranks (contiguous shares, :func:`diffsde.distributed.world.shard_range`),
so each rank integrates its own rows on its own device, and the union over the ranks is, bit for
bit on the CPU, what one process draws with :func:`diffsde.sample` and the same seed. The rows
stay where they were drawn: :meth:`ShardedSample.gather` brings them to rank 0 on request, and
:mod:`diffsde.distributed.reductions` measures them without gathering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import Tensor

from ..samplers.chunks import CHUNK_ROWS, check_counter_range, chunk_count, chunk_rows_of
from ..samplers.loop import checked_run, run_info, sample_chunks
from ..samplers.starts import checked_start, chunk_start, is_seed
from ..schedules import BetaSchedule
from .world import _collective, all_gather_objects, check_same, shard_range, world

__all__ = ["ShardedSample", "sample"]


@dataclass
class ShardedSample:
    """This rank's share of a sample set.

    Attributes:
        x: (rows, d) this rank's samples, global rows ``rows`` (empty when the set has fewer chunks
            than the world has ranks).
        rows: their global indices (consecutive).
        n_samples: the size of the whole set.
        info: the run's info (:func:`diffsde.sample`'s, with ``nfe`` and ``wall_time_s`` the largest
            over the ranks, and ``world_size``, ``chunks``).
        path: (steps + 1, rows, d) this rank's path with ``return_path``, else None.
    """

    x: Tensor
    rows: range
    n_samples: int
    info: dict = field(default_factory=dict)
    path: Tensor | None = None

    def gather(self, dst: int = 0) -> Tensor | None:
        """All n_samples rows, in order, on rank ``dst`` (None on the others): a collective, so every
        rank must call it. Rank ``dst`` then holds the whole set: use the reductions for sets that
        do not fit one process."""
        current = world()
        if current.size == 1:
            return self.x
        counts = [len(rows) for rows in all_gather_objects(self.rows, "the gather of the sample sizes")]
        longest = max(counts)
        padded = self.x.new_zeros((longest,) + tuple(self.x.shape[1:]))
        padded[:self.x.shape[0]] = self.x
        parts = [torch.empty_like(padded) for _ in counts] if current.rank == dst else None
        with _collective("the gather of the samples"):
            torch.distributed.gather(padded, parts, dst=dst)
        if current.rank != dst:
            return None
        return torch.cat([part[:count] for part, count in zip(parts, counts)])


def sample(score: Callable, method: Union[str, Any], schedule: BetaSchedule | None = None, grid: Any = None,
           n_samples: int | None = None, x_T: Tensor | None = None, t_min: float | None = None, seed: int = 0, *,
           return_path: bool = False, progress: bool = False, exact_times: bool = False, prior: str = "normal",
           device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None, dim: int | None = None,
           check_finite: bool = True, check_every: int = 100, final: str = "stop", **options: Any) -> ShardedSample:
    """:func:`diffsde.sample` with an int ``seed``, each rank drawing its whole chunks of the set.

    Every argument means what it means in :func:`diffsde.sample` (``seed`` is its ``generator``,
    here always an int in [0, 2^64)); every rank must be given the same ones. ``device`` is this
    rank's device (under torchrun with CUDA: ``cuda``, which :func:`init_from_env` has pointed at
    ``cuda:LOCAL_RANK``). A given ``x_T`` must be the whole (N, d) set on every rank; each rank reads
    its rows. Without a process group this is one rank holding every chunk: :func:`diffsde.sample`'s
    samples, in a :class:`ShardedSample`.

    Returns:
        this rank's :class:`ShardedSample`.

    Raises:
        ValueError / TypeError: what :func:`diffsde.sample` refuses; a seed that is not an int;
            n_samples smaller than the world size.
        DistributedError: settings that differ between ranks (seed, n_samples, method, grid, prior,
            dtype, ...), or a rank that failed during the run.
    """
    if not is_seed(seed):
        raise TypeError(f"seed must be an int in [0, 2**64) (it names the sample set across ranks), got "
                        f"{type(seed).__name__}")
    sampler, time_grid = checked_run(score, method, schedule, grid, t_min, exact_times, final, prior, x_T,
                                     check_every, options)
    x_T, n, d, device, dtype = checked_start(score, n_samples, x_T, int(seed), prior, device, dtype, dim)
    check_counter_range(n, time_grid.n, sampler.noise_draws)
    current = world()
    if n < current.size:
        raise ValueError(f"n_samples = {n} is smaller than the world size {current.size}: give every rank at least "
                         f"one sample (n_samples >= {current.size}) or start fewer processes")
    check_same({"seed": int(seed), "n_samples": n, "dim": d, "method": sampler.label,
                "options": sorted((key, repr(value)) for key, value in sampler.options.items()),
                "times": time_grid.times.tolist(), "prior": prior, "final": final, "dtype": str(dtype),
                "device": device.type, "x_T": None if x_T is None else float(x_T.double().sum())},
               "sampling settings")
    count = chunk_count(n)
    chunks = shard_range(count, current.rank, current.size)
    started = time.perf_counter()
    if len(chunks):
        rows = range(chunk_rows_of(chunks[0], n).start, chunk_rows_of(chunks[-1], n).stop)
        x, path, nfe = sample_chunks(sampler, score, time_grid, chunks, n, int(seed),
                                     chunk_start(score, time_grid, x_T, prior, d, device, dtype), progress,
                                     return_path=return_path, check_finite=check_finite, check_every=check_every,
                                     final=final, start="tweedie" if prior == "tweedie" else "given")
    else:
        start_row = min(chunks.start * CHUNK_ROWS, n)
        rows, nfe = range(start_row, start_row), 0
        x = torch.empty((0, d), device=device, dtype=dtype)
        path = torch.empty((time_grid.n + 1 + (final == "denoise"), 0, d), device=device,
                           dtype=dtype) if return_path else None
    wall = time.perf_counter() - started
    parts = all_gather_objects((nfe, wall), "the merge of the run's info")
    info = run_info(sampler, time_grid, max(part[0] for part in parts), final, max(part[1] for part in parts))
    info.update(world_size=current.size, chunks=count)
    return ShardedSample(x, rows, n, info, path)

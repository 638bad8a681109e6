"""What each training step draws: a batch of data x0 and the OU times t, all from the run's generator.

A data source has ``next(generator, step)`` -> (batch, d) on the training device and dtype, and
``skip(batches)`` for a resumed run; a time sampler is called as ``times(batch, generator)``.
Every source checks its data (shape, dimension, finiteness) before the first step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._checks import check_data
from ..protocols import DataSource

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["TIME_SAMPLERS", "make_batches"]


# -- times -----------------------------------------------------------------------------------------

class UniformTimes:
    """t ~ U[t_min, T] (OU times, the config's ``t_min`` and ``T``)."""

    def __init__(self, config: TrainConfig, device: torch.device, dtype: torch.dtype):
        self.low, self.width = config.t_min, config.T - config.t_min
        self.device, self.dtype = device, dtype

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(batch, generator=generator, device=self.device, dtype=self.dtype)
        return self.low + self.width * u


class GridTimes:
    """t uniform over the config's schedule's exact times τ_1..τ_n (see :class:`TrainConfig`)."""

    def __init__(self, config: TrainConfig, device: torch.device, dtype: torch.dtype):
        self.times = config.beta_schedule().exact_times[1:].to(device=device, dtype=dtype)

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(self.times.shape[0], (batch,), generator=generator, device=self.times.device)
        return self.times[index]


TIME_SAMPLERS = {"uniform": UniformTimes, "grid": GridTimes}
"""``TrainConfig.time_sampling`` name -> sampler class, built as ``cls(config, device, dtype)``."""


# -- data ------------------------------------------------------------------------------------------

def make_batches(data: Any, dim: int | None, batch_size: int, device: torch.device, dtype: torch.dtype):
    """The data source for ``data``: a tensor (N, d), a :class:`~diffsde.protocols.DataSource`
    (``.sample(n, generator=...)``) or an iterable of (B, d) batches. ``dim`` is the model's
    declared dimension (or None); batches come on ``device`` in ``dtype``.

    Raises:
        TypeError: anything else, or batches that are not floating tensors.
        ValueError: wrong shapes, a dimension other than ``dim``, NaN or infinite entries, no data.
    """
    if isinstance(data, Tensor):
        return TensorBatches(data, dim, batch_size, device, dtype)
    if isinstance(data, DataSource) and callable(data.sample):
        return SampledBatches(data, dim, batch_size, device, dtype)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return IteratedBatches(data, dim, batch_size, device, dtype)
    raise TypeError(f"data must be a tensor (N, d), an object with .sample(n, generator=...), or an iterable of "
                    f"(B, d) batches; got {type(data).__name__}")


def _check_dim(dim: int, model_dim: int | None) -> None:
    if model_dim is not None and dim != model_dim:
        raise ValueError(f"data has dimension {dim} but the model expects dim = {model_dim}")


class TensorBatches:
    """Batches drawn with replacement from a (N, d) tensor."""

    def __init__(self, data: Tensor, dim: int | None, batch_size: int, device: torch.device, dtype: torch.dtype):
        check_data(data, "data")
        if data.dim() != 2 or data.shape[0] == 0 or data.shape[1] == 0:
            raise ValueError(f"data must have shape (N, d) with N >= 1, got {tuple(data.shape)}")
        _check_dim(data.shape[1], dim)
        if not bool(torch.isfinite(data).all()):
            row = int(torch.nonzero(~torch.isfinite(data))[0, 0])
            raise ValueError(f"data must be finite; row {row} has a NaN or infinite entry")
        self.data = data.detach().to(device=device, dtype=dtype)
        self.batch_size = batch_size

    def next(self, generator: torch.Generator, step: int) -> Tensor:
        index = torch.randint(self.data.shape[0], (self.batch_size,), generator=generator, device=self.data.device)
        return self.data[index]

    def skip(self, batches: int) -> None:
        """Nothing to skip: batches depend on the generator only (restored from the checkpoint)."""


class SampledBatches:
    """Batches ``data.sample(batch_size, generator=generator)`` from a distribution object."""

    def __init__(self, data: DataSource, dim: int | None, batch_size: int, device: torch.device,
                 dtype: torch.dtype):
        self.data, self.dim, self.batch_size, self.device, self.dtype = data, dim, batch_size, device, dtype
        # A probe from a throwaway generator: the shape, dtype and values are checked before any step.
        probe = torch.Generator(device=device).manual_seed(0)
        self._checked(data.sample(2, generator=probe), "data.sample(2, generator=...)", 2)

    def _checked(self, batch, what: str, size: int) -> Tensor:
        if not isinstance(batch, Tensor) or not batch.is_floating_point():
            raise TypeError(f"{what} must return a floating tensor, got {type(batch).__name__}")
        if batch.dim() != 2 or batch.shape[0] != size:
            raise ValueError(f"{what} must return shape ({size}, d), got {tuple(batch.shape)}")
        _check_dim(batch.shape[1], self.dim)
        if not bool(torch.isfinite(batch).all()):
            raise ValueError(f"{what} returned a NaN or infinite entry")
        return batch.to(device=self.device, dtype=self.dtype)

    def next(self, generator: torch.Generator, step: int) -> Tensor:
        return self._checked(self.data.sample(self.batch_size, generator=generator),
                             f"data.sample at step {step}", self.batch_size)

    def skip(self, batches: int) -> None:
        """Nothing to skip: samples depend on the generator only (restored from the checkpoint)."""


class IteratedBatches:
    """Batches from an iterable of (B, d) tensors (or 1-tuples of one, as a DataLoader over a
    TensorDataset yields), re-iterated when a pass ends. A resumed run skips the batches
    already used, so it is exact when iterating ``data`` is deterministic."""

    def __init__(self, data: Iterable, dim: int | None, batch_size: int, device: torch.device, dtype: torch.dtype):
        self.data, self.dim, self.device, self.dtype = data, dim, device, dtype
        self.iterator = self._cycle()
        first = self._checked(next(self.iterator), 0)  # raises before any step if data is empty or bad
        self.iterator = itertools.chain([first], self.iterator)

    def _cycle(self):
        while True:
            empty = True
            for batch in self.data:
                empty = False
                yield batch
            if empty:
                raise ValueError("data is an empty iterable (or an exhausted iterator): no batch to train on")

    def _checked(self, batch, step: int) -> Tensor:
        if isinstance(batch, (tuple, list)) and len(batch) == 1:
            batch = batch[0]
        if not isinstance(batch, Tensor) or not batch.is_floating_point():
            raise TypeError(f"data batch {step} must be a floating tensor (B, d), got {type(batch).__name__}")
        if batch.dim() != 2 or batch.shape[0] == 0:
            raise ValueError(f"data batch {step} must have shape (B, d) with B >= 1, got {tuple(batch.shape)}")
        _check_dim(batch.shape[1], self.dim)
        if not bool(torch.isfinite(batch).all()):
            raise ValueError(f"data batch {step} has a NaN or infinite entry")
        return batch.to(device=self.device, dtype=self.dtype)

    def next(self, generator: torch.Generator, step: int) -> Tensor:
        return self._checked(next(self.iterator), step)

    def skip(self, batches: int) -> None:
        for _ in range(batches):
            next(self.iterator)

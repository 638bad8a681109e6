"""Training an ε-network: DDPM's simple loss, the training loop, and atomic, checked checkpoints.

The loss is L_simple (seed 004, Algorithm 1; seed 001, eq. 14) written in the OU's own time
(DESIGN.md): draw t, form ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` with :meth:`OU.marginal`,
and regress ε. All randomness of a run (data batches, times, noise) comes from ONE explicit
``torch.Generator`` whose state is checkpointed, so a run stopped at step k and resumed from
its checkpoint reproduces the uninterrupted run bit for bit (on the CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._checks import TimeLike, check_data
from ._io import write_atomic
from .nets import EpsilonMLP
from .schedules import BetaSchedule
from .scores import EpsilonScore
from .sde import OU

__all__ = ["eps_loss", "TrainConfig", "TrainState", "TrainResult", "train", "Checkpoint", "CheckpointError",
           "save_checkpoint", "load_checkpoint"]

PathLike = Union[str, os.PathLike]
Device = Union[str, torch.device, None]

CHECKPOINT_FORMAT = "diffsde-training-checkpoint"
CHECKPOINT_VERSION = 1


def eps_loss(model: nn.Module, x0: Tensor, t: TimeLike, noise: Tensor) -> Tensor:
    """DDPM's simple loss ``E ‖ε - ε_θ(x_t, t)‖²`` on ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε``
    (seed 004, Algorithm 1, in OU time; the mixing is :meth:`diffsde.sde.OU.marginal`).

    The squared error is SUMMED over the data dimensions (the seed's ``‖·‖²₂``) and averaged
    over the batch, so a model predicting 0 scores ``E ‖ε‖² = d``.

    Args:
        model: ``model(x, t)`` -> ε of x's shape.
        x0: (batch, d) data.
        t: OU time(s) t > 0: a float, a 0-d tensor or a (batch,) tensor; passed to the model as given.
        noise: (batch, d) the ε that is mixed in.
    Returns:
        a 0-d tensor.
    Raises:
        ValueError: noise and x0 differ in shape, or t < 0 (t = 0 reaches the model, which refuses it).
    """
    check_data(x0, "x0")
    check_data(noise, "noise")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    mean, std = OU().marginal(x0, t)
    residual = noise - model(mean + std * noise, t)
    return residual.pow(2).flatten(1).sum(-1).mean()


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

_SCHEDULES = {"linear": BetaSchedule.linear, "cosine": BetaSchedule.cosine}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train`; everything needed to reproduce a run (with the model's config).

    Attributes:
        steps: optimizer steps (>= 1).
        batch_size: samples per step (>= 1); ignored when the data is an iterable of batches.
        lr: peak learning rate of Adam (> 0).
        warmup_steps: linear warm-up from lr / w to lr over w = min(warmup_steps, steps) steps
            (warmup_steps >= 0); then cosine decay to ``lr * final_lr_fraction`` at the last step.
        final_lr_fraction: in [0, 1].
        grad_clip: maximum global gradient norm (> 0), or None for no clipping.
        ema_decay: decay of the weight EMA, in [0, 1); the EMA uses ``min(ema_decay, (1 + k) / (10 + k))``
            at update k, so a short run is not dominated by the initial weights.
        time_sampling: "uniform": t ~ U[t_min, T]; "grid": t uniform over the grid points τ_1..τ_n of
            the schedule ``schedule``/``schedule_n`` (seed 004's t ~ U{1..T}), at its EXACT times
            ``τ_i = -log ᾱ_i``, where the OU marginal is exactly DDPM's q(x_i | x0). That is where
            :func:`diffsde.ddpm.vlb` and a sampler on ``schedule.grid(exact_times=True)`` query
            the network; seed-000 times t_i = Σ β_j would be off by O(β) from the ᾱ_i the chain uses.
        t_min: lower end of "uniform" times, ``0 < t_min < T`` (OU time); unused by "grid".
        T: upper end of "uniform" times, ``t_min < T < inf`` (OU time); unused by "grid".
        schedule: the "grid" schedule, "linear" or "cosine"; unused by "uniform".
        schedule_n: its number of steps; unused by "uniform".
        seed: seed of the run's generator (when :func:`train` is not handed one).
    """

    steps: int = 2000
    batch_size: int = 512
    lr: float = 2e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.01
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    time_sampling: str = "uniform"
    t_min: float = 1e-3
    T: float = 10.5
    schedule: str = "linear"
    schedule_n: int = 1000
    seed: int = 0

    def __post_init__(self):
        _check_int(self.steps, "steps", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.warmup_steps, "warmup_steps", 0)
        _check_int(self.schedule_n, "schedule_n", 1)
        _check_int(self.seed, "seed", 0)
        _check_real(self.lr, "lr", "(0, inf)", lambda v: 0 < v < math.inf)
        _check_real(self.final_lr_fraction, "final_lr_fraction", "[0, 1]", lambda v: 0 <= v <= 1)
        _check_real(self.ema_decay, "ema_decay", "[0, 1)", lambda v: 0 <= v < 1)
        if self.grad_clip is not None:
            _check_real(self.grad_clip, "grad_clip", "(0, inf) or None", lambda v: 0 < v < math.inf)
        _check_real(self.T, "T", "(0, inf)", lambda v: 0 < v < math.inf)
        _check_real(self.t_min, "t_min", f"(0, T) = (0, {self.T:g})", lambda v: 0 < v < self.T)
        if self.time_sampling not in _TIME_SAMPLERS:
            raise ValueError(f"time_sampling must be one of {sorted(_TIME_SAMPLERS)}, got {self.time_sampling!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}, got {self.schedule!r}")
        if self.time_sampling == "grid":
            self.beta_schedule()  # refuses e.g. the linear schedule with schedule_n <= 20

    def beta_schedule(self) -> BetaSchedule:
        """The "grid" schedule ``BetaSchedule.<schedule>(schedule_n)``."""
        return _SCHEDULES[self.schedule](self.schedule_n)

    def to_dict(self) -> dict:
        """The fields as a dict of Python primitives (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown or missing fields raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or set(values) != names:
            got = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"a TrainConfig needs exactly the fields {sorted(names)}, got {got}")
        return cls(**values)

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up, then
        cosine decay from 1 to ``final_lr_fraction`` over the remaining steps."""
        warmup = min(self.warmup_steps, self.steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.final_lr_fraction + (1 - self.final_lr_fraction) * cosine


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")


def _check_real(value, name: str, allowed: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in {allowed}, got {type(value).__name__} {value!r}")
    if not ok(float(value)):  # NaN fails every comparison, so it is refused too
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")


# --------------------------------------------------------------------------------------
# Time sampling and data sources (all randomness from the run's generator)
# --------------------------------------------------------------------------------------

class _UniformTimes:
    """t ~ U[t_min, T]."""

    def __init__(self, config: TrainConfig, device: torch.device, dtype: torch.dtype):
        self.low, self.width = config.t_min, config.T - config.t_min
        self.device, self.dtype = device, dtype

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(batch, generator=generator, device=self.device, dtype=self.dtype)
        return self.low + self.width * u


class _GridTimes:
    """t uniform over the schedule's exact times τ_1..τ_n (see :class:`TrainConfig`)."""

    def __init__(self, config: TrainConfig, device: torch.device, dtype: torch.dtype):
        self.times = config.beta_schedule().exact_times[1:].to(device=device, dtype=dtype)

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(self.times.shape[0], (batch,), generator=generator, device=self.times.device)
        return self.times[index]


_TIME_SAMPLERS = {"uniform": _UniformTimes, "grid": _GridTimes}


class _TensorBatches:
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


class _SampledBatches:
    """Batches ``data.sample(batch_size, generator=generator)`` from a distribution object."""

    def __init__(self, data: Any, dim: int | None, batch_size: int, device: torch.device, dtype: torch.dtype):
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


class _IteratedBatches:
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


def _check_dim(dim: int, model_dim: int | None) -> None:
    if model_dim is not None and dim != model_dim:
        raise ValueError(f"data has dimension {dim} but the model expects dim = {model_dim}")


def _batches(data, dim: int | None, batch_size: int, device: torch.device, dtype: torch.dtype):
    """The data source for ``data``: a tensor, an object with ``.sample``, or an iterable of batches."""
    if isinstance(data, Tensor):
        return _TensorBatches(data, dim, batch_size, device, dtype)
    if callable(getattr(data, "sample", None)):
        return _SampledBatches(data, dim, batch_size, device, dtype)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return _IteratedBatches(data, dim, batch_size, device, dtype)
    raise TypeError(f"data must be a tensor (N, d), an object with .sample(n, generator=...), or an iterable of "
                    f"(B, d) batches; got {type(data).__name__}")


# --------------------------------------------------------------------------------------
# State, result, training loop
# --------------------------------------------------------------------------------------

@dataclass
class TrainState:
    """Everything a run carries from step to step; what a checkpoint holds.

    ``losses`` is a (config.steps,) float32 CPU tensor of per-step minibatch losses, valid up
    to ``step`` (the number of optimizer steps taken).
    """

    model: nn.Module
    ema_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    config: TrainConfig
    step: int = 0
    losses: Tensor = field(default_factory=lambda: torch.zeros(0))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained network (last iterate), trained in place.
        ema_model: the exponential moving average of its weights; use it for sampling.
        losses: (steps,) float32 CPU tensor of per-step minibatch losses (:func:`eps_loss`).
        config: the run's :class:`TrainConfig`.
    """

    model: nn.Module
    ema_model: nn.Module
    losses: Tensor
    config: TrainConfig

    def score(self, ema: bool = True) -> EpsilonScore:
        """The score ``s = -ε_θ / sqrt(1 - e^{-t})`` of the EMA (default) or last-iterate model."""
        return EpsilonScore(self.ema_model if ema else self.model)


def train(model: nn.Module, data, config: TrainConfig | None = None, *, device: Device = None,
          generator: torch.Generator | None = None, progress: bool = False,
          checkpoint_path: PathLike | None = None, checkpoint_every: int | None = None,
          resume: bool = False, compile_model: bool = False) -> TrainResult:
    """Train an ε-network with :func:`eps_loss` (seed 004, Algorithm 1, in OU time).

    Each step draws, in this order and all from one generator: a batch x0 from ``data``,
    times t (``config.time_sampling``), noise ε; then Adam with the warm-up + cosine learning
    rate (:meth:`TrainConfig.lr_factor`), gradient-norm clipping, and an EMA update.

    Args:
        model: ``model(x, t)`` -> ε, e.g. :class:`~diffsde.nets.EpsilonMLP`; moved to ``device`` and
            trained in place. Its ``dim`` attribute, when it has one, is checked against the data.
        data: a tensor (N, d) (batches drawn with replacement), an object with
            ``.sample(n, generator=...)`` returning (n, d) (e.g. :class:`~diffsde.scores.GaussianScore`),
            or an iterable of (B, d) batches (cycled). Cast to the model's dtype.
        config: hyper-parameters (default ``TrainConfig()``).
        device: where to train (default: where the model's parameters are).
        generator: the run's random source, on ``device`` (default: a new one seeded with ``config.seed``).
        progress: show a tqdm bar with the running loss.
        checkpoint_path: where to save checkpoints (atomically); saved every ``checkpoint_every``
            steps (when given) and at the end. An existing file is only overwritten with ``resume``.
        checkpoint_every: int >= 1 or None.
        resume: continue from ``checkpoint_path`` (which must exist and match the model and config):
            the losses and weights are then exactly those of an uninterrupted run (bit for bit on the CPU).
        compile_model: run the model through ``torch.compile`` (the weights stay shared).
    Returns:
        a :class:`TrainResult`.
    Raises (all before any step): TypeError / ValueError for a bad model, data (wrong dimension,
        NaN or infinite entries, empty), config, device or checkpoint arguments; FileNotFoundError /
        FileExistsError for a missing / unexpected checkpoint file; :class:`CheckpointError` for a
        checkpoint that is corrupt or does not match this model and config.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters")
    if not parameters[0].is_floating_point():
        raise TypeError(f"model parameters must be floating point, got {parameters[0].dtype}")
    device = torch.device(device) if device is not None else parameters[0].device
    dim = getattr(model, "dim", None)
    path = _checkpoint_args(checkpoint_path, checkpoint_every, resume)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    elif not isinstance(generator, torch.Generator) or generator.device.type != device.type:
        raise ValueError(f"generator must be a torch.Generator on {device.type}, got "
                         f"{getattr(generator, 'device', type(generator).__name__)}")
    dtype = parameters[0].dtype
    batches = _batches(data, dim, config.batch_size, device, dtype)
    times = _TIME_SAMPLERS[config.time_sampling](config, device, dtype)
    model.to(device)
    state = _new_state(model, config, generator)
    if resume:
        load_checkpoint(path, map_location=device).restore(state)
        batches.skip(state.step)
    forward = torch.compile(model) if compile_model else model

    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, desc="train", leave=False)
    start, recent = state.step, torch.zeros(config.steps, device=device)
    try:
        while state.step < config.steps:
            recent[state.step] = _step(state, forward, batches, times, parameters)
            state.step += 1
            if state.step % _REFRESH == 0 or state.step == config.steps:
                _flush_losses(state, recent, start)
                bar.update(state.step - bar.n)
                bar.set_postfix(loss=f"{float(state.losses[max(0, state.step - _REFRESH):state.step].mean()):.4f}")
            if path is not None and (state.step == config.steps or
                                     (checkpoint_every is not None and state.step % checkpoint_every == 0)):
                _flush_losses(state, recent, start)
                save_checkpoint(path, state)
    finally:
        bar.close()
    _flush_losses(state, recent, start)
    return TrainResult(model, state.ema_model, state.losses.clone(), config)


def _step(state: TrainState, forward: nn.Module, batches, times, parameters: list) -> Tensor:
    """One optimizer step; returns the detached minibatch loss. Draws x0, then t, then ε."""
    step, config, generator = state.step, state.config, state.generator
    x0 = batches.next(generator, step)
    t = times(x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    loss = eps_loss(forward, x0, t, noise)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    _update_ema(state.ema_model, state.model, min(config.ema_decay, (1 + step) / (10 + step)))
    return loss.detach()


_REFRESH = 50  # progress-bar refresh interval (steps); losses leave the device only then


def _flush_losses(state: TrainState, recent: Tensor, start: int) -> None:
    """Copy the losses of steps start..step-1, computed on the device, into the CPU history
    (one synchronisation); earlier ones came from the checkpoint."""
    state.losses[start:state.step] = recent[start:state.step].to("cpu", torch.float32)


def _new_state(model: nn.Module, config: TrainConfig, generator: torch.Generator) -> TrainState:
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    return TrainState(model, ema_model, optimizer, scheduler, generator, config, 0,
                      torch.zeros(config.steps, dtype=torch.float32))


@torch.no_grad()
def _update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_ema <- decay θ_ema + (1 - decay) θ`` for every parameter; buffers are copied."""
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def _checkpoint_args(path: PathLike | None, every: int | None, resume: bool) -> Path | None:
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
    if every is not None:
        _check_int(every, "checkpoint_every", 1)
    if path is None:
        if every is not None or resume:
            raise ValueError("checkpoint_every and resume need a checkpoint_path")
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"checkpoint_path's directory {str(path.parent)!r} does not exist")
    if resume and not path.is_file():
        raise FileNotFoundError(f"resume=True but the checkpoint {str(path)!r} does not exist")
    if not resume and path.exists():
        raise FileExistsError(f"checkpoint {str(path)!r} already exists; pass resume=True to continue from it "
                              f"or choose another checkpoint_path")
    return path


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of another format or version, or does not match
    the model / configuration it is loaded for."""


def save_checkpoint(path: PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically: to a temporary file in the same directory, flushed
    to disk, then renamed over ``path`` with ``os.replace``. A crash leaves either the old file
    or the new one, never a half-written one, and no temporary file behind.

    The file holds only tensors and primitive containers (loadable with ``weights_only=True``):
    format tag and version, step, model class and constructor config (``model.config``, when the
    model has one), the :class:`TrainConfig`, model / EMA / optimizer / LR-scheduler state
    dicts, the generator's device and state, the loss history, and a SHA-256 checksum of all of it.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": state.step,
        "model_class": type(state.model).__name__,
        "model_config": dict(getattr(state.model, "config", {})),
        "train_config": state.config.to_dict(),
        "model": state.model.state_dict(),
        "ema": state.ema_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "generator": {"device": state.generator.device.type, "state": state.generator.get_state()},
        "losses": state.losses[:state.step].clone(),
    }
    payload["checksum"] = _checksum(payload)
    write_atomic(path, lambda handle: torch.save(payload, handle))


@dataclass(frozen=True)
class Checkpoint:
    """The checked contents of a checkpoint file (see :func:`load_checkpoint`)."""

    step: int
    model_class: str
    model_config: dict
    config: TrainConfig
    model_state: dict
    ema_state: dict
    optimizer_state: dict
    scheduler_state: dict
    generator_device: str
    generator_state: Tensor
    losses: Tensor

    def build_model(self, ema: bool = True, device: Device = None) -> EpsilonMLP:
        """An :class:`EpsilonMLP` with the EMA (default) or last-iterate weights, in eval mode."""
        if self.model_class != "EpsilonMLP":
            raise CheckpointError(f"build_model rebuilds EpsilonMLP checkpoints; this one holds a {self.model_class}: "
                                  f"construct it yourself and load checkpoint.ema_state / model_state")
        model = EpsilonMLP(**self.model_config)
        model.load_state_dict(self.ema_state if ema else self.model_state)
        return model.to(device).eval()

    def restore(self, state: TrainState) -> None:
        """Load this checkpoint into a fresh ``state`` after checking that it belongs to the same
        model (class, config, parameter names and shapes), the same :class:`TrainConfig` and a
        generator on the same device type; raises :class:`CheckpointError` otherwise."""
        model_class = type(state.model).__name__
        model_config = dict(getattr(state.model, "config", {}))
        if (model_class, model_config) != (self.model_class, self.model_config):
            raise CheckpointError(f"checkpoint holds {self.model_class}({self.model_config}) but the model is "
                                  f"{model_class}({model_config})")
        _check_state_shapes(self.model_state, state.model.state_dict(), "model")
        if self.config != state.config:
            differ = {name: (value, getattr(state.config, name)) for name, value in self.config.to_dict().items()
                      if value != getattr(state.config, name)}
            raise CheckpointError(f"checkpoint was written with a different TrainConfig; (checkpoint, now) = {differ}")
        if self.generator_device != state.generator.device.type:
            raise CheckpointError(f"checkpoint's generator is on {self.generator_device}, this run's on "
                                  f"{state.generator.device.type}")
        state.model.load_state_dict(self.model_state)
        state.ema_model.load_state_dict(self.ema_state)
        state.optimizer.load_state_dict(self.optimizer_state)
        state.scheduler.load_state_dict(self.scheduler_state)
        state.generator.set_state(self.generator_state)
        state.losses[:self.step] = self.losses
        state.step = self.step


def load_checkpoint(path: PathLike, map_location: Device = "cpu") -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Loads with ``torch.load(..., weights_only=True)`` and checks the format tag and version,
    the SHA-256 checksum, every key and its type, the config, the loss history's length, and
    (for an :class:`EpsilonMLP`) that the stored weights have the shapes its config implies.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, of another format or version, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(err).__name__}: {str(err)[:200]}") from err
    return _parse(payload, str(path))


_PAYLOAD_TYPES = {"format": str, "version": int, "step": int, "model_class": str, "model_config": dict,
                  "train_config": dict, "model": dict, "ema": dict, "optimizer": dict, "scheduler": dict,
                  "generator": dict, "losses": Tensor, "checksum": str}


def _parse(payload, where: str) -> Checkpoint:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not a diffsde training checkpoint "
                              f"(format tag {CHECKPOINT_FORMAT!r} missing)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{where} has checkpoint version {payload.get('version')!r}; this diffsde reads "
                              f"version {CHECKPOINT_VERSION}")
    for key, kind in _PAYLOAD_TYPES.items():
        if not isinstance(payload.get(key), kind) or (kind is int and isinstance(payload[key], bool)):
            raise CheckpointError(f"{where}: entry {key!r} must be a {kind.__name__}, got "
                                  f"{type(payload.get(key)).__name__}")
    if set(payload) != set(_PAYLOAD_TYPES):
        raise CheckpointError(f"{where}: unexpected entries {sorted(set(payload) - set(_PAYLOAD_TYPES))}")
    if _checksum(payload) != payload["checksum"]:
        raise CheckpointError(f"{where}: checksum mismatch, the file is corrupt")
    try:
        config = TrainConfig.from_dict(payload["train_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid train_config: {err}") from err
    step, losses = payload["step"], payload["losses"]
    if not 0 <= step <= config.steps:
        raise CheckpointError(f"{where}: step {step} is outside [0, steps] = [0, {config.steps}]")
    if losses.shape != (step,):
        raise CheckpointError(f"{where}: losses must have shape ({step},), got {tuple(losses.shape)}")
    generator = payload["generator"]
    if not isinstance(generator.get("device"), str) or not isinstance(generator.get("state"), Tensor) \
            or generator["state"].dtype != torch.uint8:
        raise CheckpointError(f"{where}: generator must hold a device name and a uint8 state tensor")
    _check_state_shapes(payload["ema"], payload["model"], "ema")
    if payload["model_class"] == "EpsilonMLP":
        try:
            reference = EpsilonMLP(**payload["model_config"]).state_dict()
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: invalid EpsilonMLP config {payload['model_config']}: {err}") from err
        _check_state_shapes(payload["model"], reference, "model")
    return Checkpoint(step, payload["model_class"], payload["model_config"], config, payload["model"],
                      payload["ema"], payload["optimizer"], payload["scheduler"], generator["device"],
                      generator["state"].cpu(), losses.to("cpu", torch.float32))


def _check_state_shapes(stored: dict, expected: dict, name: str) -> None:
    """Refuse a state dict whose names or shapes differ from ``expected``'s."""
    stored_shapes = {k: tuple(v.shape) for k, v in stored.items() if isinstance(v, Tensor)}
    expected_shapes = {k: tuple(v.shape) for k, v in expected.items()}
    if len(stored_shapes) != len(stored) or stored_shapes != expected_shapes:
        wrong = sorted(k for k in set(stored_shapes) | set(expected_shapes)
                       if stored_shapes.get(k) != expected_shapes.get(k))
        details = {k: (stored_shapes.get(k), expected_shapes.get(k)) for k in wrong[:4]}
        raise CheckpointError(f"checkpoint's {name} weights do not match the model: (stored, expected) shapes "
                              f"{details}{' ...' if len(wrong) > 4 else ''}")


def _checksum(payload: dict) -> str:
    """SHA-256 over every entry but "checksum", walked in a fixed order (tensors by dtype, shape, bytes)."""
    digest = hashlib.sha256()

    def visit(value) -> None:
        if isinstance(value, Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"P{value!r}".encode())

    visit({key: value for key, value in payload.items() if key != "checksum"})
    return digest.hexdigest()

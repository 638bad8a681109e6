"""The training loop: one explicit generator, Adam with warm-up and cosine decay, an EMA of the
weights, periodic atomic checkpoints and bit-exact resume, and a stop with
:class:`TrainingDivergedError` when the loss or the weights stop being finite."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_bool, check_int
from ..parametrizations import EpsilonScore
from ..protocols import declared_dim
from . import checkpoints
from ._memory import TRAINING_COPIES, check_fits
from .config import TrainConfig
from .data import TIME_SAMPLERS, make_batches
from .loss import eps_loss

__all__ = ["TrainState", "TrainResult", "train", "TrainingDivergedError"]

PathLike = Union[str, os.PathLike]
Device = Union[str, torch.device, None]


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or infinite loss or weight (typically a learning rate far too large
    without gradient clipping). Raised by :func:`~diffsde.training.train`, which then stops and
    leaves its last checkpoint, written while everything was finite, untouched.

    Attributes:
        step: the first optimizer step (0-based, an index into the losses) whose loss is not finite,
            or after which the weights are not.
        losses: (step + 1,) float32 CPU tensor: the losses up to and including that step.
    """

    def __init__(self, message: str, step: int, losses: Tensor):
        super().__init__(message)
        self.step = step
        self.losses = losses


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

    @classmethod
    def new(cls, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> "TrainState":
        """The state before the first step: an EMA copy of ``model``, Adam at ``config.lr`` with the
        :meth:`TrainConfig.lr_factor` schedule, step 0 and no losses yet."""
        ema_model = copy.deepcopy(model).requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
        return cls(model, ema_model, optimizer, scheduler, generator, config, 0,
                   torch.zeros(config.steps, dtype=torch.float32))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained network (last iterate), trained in place.
        ema_model: the exponential moving average of its weights; use it for sampling.
        losses: (steps,) float32 CPU tensor of per-step minibatch losses (:func:`~diffsde.training.eps_loss`).
        config: the run's :class:`~diffsde.training.TrainConfig`.
    """

    model: nn.Module
    ema_model: nn.Module
    losses: Tensor
    config: TrainConfig

    def score(self, ema: bool = True) -> EpsilonScore:
        """The score ``s = -ε_θ / sqrt(1 - e^{-t})`` of the EMA (default) or last-iterate model."""
        return EpsilonScore(self.ema_model if ema else self.model)


def train(model: nn.Module, data: Any, config: TrainConfig | None = None, *, device: Device = None,
          generator: torch.Generator | None = None, progress: bool = False,
          checkpoint_path: PathLike | None = None, checkpoint_every: int | None = None,
          resume: bool = False, compile_model: bool = False) -> TrainResult:
    """Train an ε-network with :func:`~diffsde.training.eps_loss` (Ho et al. 2020, Algorithm 1, in OU time).

    Each step draws, in this order and all from one generator: a batch x0 from ``data``,
    times t (``config.time_sampling``), noise ε; then Adam with the warm-up + cosine learning
    rate (:meth:`TrainConfig.lr_factor`), gradient-norm clipping, and an EMA update.

    Args:
        model: ``model(x, t)`` -> ε, e.g. :class:`~diffsde.nets.EpsilonMLP`; moved to ``device`` and
            trained in place. Its ``dim``, when it declares one, is checked against the data.
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
        FileExistsError for a missing / unexpected checkpoint file; :class:`~diffsde.training.CheckpointError`
        for a checkpoint that is corrupt or does not match this model and config; MemoryError when the
        weights, their gradients, the EMA and Adam's two moments (5 copies) exceed the device's memory.
        During training: :class:`TrainingDivergedError`, naming the first step whose loss is NaN or
        infinite (losses are read every 50 steps and before each checkpoint) or after which a weight is
        (read before each checkpoint and at the end); no checkpoint is written from that point on.
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
    dim = declared_dim(model)
    path = _checkpoint_args(checkpoint_path, checkpoint_every, resume)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    elif not isinstance(generator, torch.Generator) or generator.device.type != device.type:
        raise ValueError(f"generator must be a torch.Generator on {device.type}, got "
                         f"{getattr(generator, 'device', type(generator).__name__)}")
    dtype = parameters[0].dtype
    batches = make_batches(data, dim, config.batch_size, device, dtype)
    times = TIME_SAMPLERS[config.time_sampling](config, device, dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
    check_fits(TRAINING_COPIES * weight_bytes, device, f"training a {type(model).__name__} of {weight_bytes:,} bytes "
                                                       f"of weights (with gradients, EMA and Adam's two moments)")
    model.to(device)
    state = TrainState.new(model, config, generator)
    if resume:
        checkpoints.load_checkpoint(path, map_location=device).restore(state)
        batches.skip(state.step)
    forward = torch.compile(model) if compile_model else model

    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, desc="train", leave=False)
    start, recent = state.step, torch.zeros(config.steps, device=device)
    saved = state.step if resume else None  # the step of the checkpoint now at `path`
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
                _check_finite_weights(state)
                checkpoints.save_checkpoint(path, state)
                saved = state.step
        _flush_losses(state, recent, start)
        _check_finite_weights(state)
    except TrainingDivergedError as err:
        kept = ("" if path is None else f"; no checkpoint was written to {str(path)!r}" if saved is None
                else f"; {str(path)!r} keeps the checkpoint of step {saved}, written while everything was finite")
        raise TrainingDivergedError(f"{err}{kept}", err.step, err.losses) from None
    finally:
        bar.close()
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
    (one synchronisation; earlier ones came from the checkpoint), and stop at the first that is
    not finite."""
    state.losses[start:state.step] = recent[start:state.step].to("cpu", torch.float32)
    finite = torch.isfinite(state.losses[start:state.step])
    if not bool(finite.all()):
        step = start + int((~finite).nonzero()[0, 0])
        _diverged(state, step, f"the loss of step {step} is {float(state.losses[step])}")


def _check_finite_weights(state: TrainState) -> None:
    """Stop when a weight of the model or of its EMA is NaN or infinite (before it is checkpointed)."""
    for name, module in (("model", state.model), ("EMA", state.ema_model)):
        bad = checkpoints.first_nonfinite(module.state_dict())
        if bad is not None:
            _diverged(state, state.step - 1, f"after step {state.step - 1} the {name} weight {bad} has NaN or "
                                             f"infinite entries")


def _diverged(state: TrainState, step: int, what: str) -> None:
    config = state.config
    raise TrainingDivergedError(
        f"training diverged: {what} (steps count from 0; lr={config.lr:g}, grad_clip={config.grad_clip}); "
        f"lower lr or set grad_clip",
        step, state.losses[:step + 1].clone())


@torch.no_grad()
def _update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_ema <- decay θ_ema + (1 - decay) θ`` for every parameter; buffers are copied."""
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def _checkpoint_args(path: PathLike | None, every: int | None, resume: bool) -> Path | None:
    check_bool(resume, "resume")
    check_int(every, "checkpoint_every", minimum=1, none_ok=True)
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

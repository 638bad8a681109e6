"""The training loop: one explicit generator, Adam with warm-up and cosine decay, an EMA of the
weights, periodic atomic checkpoints and bit-exact resume, and a stop with
:class:`TrainingDivergedError` when the loss or the weights stop being finite. Under a
torch.distributed process group the same loop runs data-parallel
(:mod:`diffsde.distributed.training`)."""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_bool, check_int
from ..distributed.training import DataParallel, generator_fingerprint
from ..parametrizations import EpsilonScore
from ..protocols import declared_dim
from . import checkpoints
from ._memory import TRAINING_COPIES, check_fits
from .config import TrainConfig
from .data import TIME_SAMPLERS, IteratedBatches, make_batches
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

    Under a process group (``torch.distributed`` initialised, e.g. by torchrun and
    :func:`diffsde.distributed.world.init_from_env`) the run is data-parallel over its W ranks with
    ``torch.nn.parallel.DistributedDataParallel`` (DDP; gloo on the CPU, NCCL on CUDA, each rank
    passing its own ``device``, e.g. ``cuda:LOCAL_RANK``; see
    https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html).
    Without one, nothing in this paragraph applies and torch.distributed is never called.

    - The global batch is ``config.batch_size`` rows (for an iterable, each batch's B), which must
      be a multiple of W. Every rank draws the WHOLE global batch as above (x0, t, ε from the same
      generator: ``config.seed`` or the given generator, whose state must agree) and trains on its
      own rows [r·B/W, (r + 1)·B/W). DDP averages the gradients of the ranks' local mean losses,
      which is the gradient of the global mean, so a W-rank run equals the one-process run with the
      same config within float32 round-off, whatever W. Streams derived from each rank's index
      would instead make the weights depend on W; drawing B rows rather than B/W costs little next
      to the network.
    - ``losses`` are the global batch's: the ranks' losses averaged (one all-reduce per 50 steps and
      per checkpoint), so a divergence stops every rank at the same step.
    - Rank 0's initial weights are broadcast by DDP; the weights and the EMA then stay the same on
      every rank. ``TrainResult.model`` / ``ema_model`` are the plain modules, not the DDP wrapper;
      with ``compile_model`` the compiled module is wrapped.
    - Rank 0 alone writes checkpoints, to its ``checkpoint_path``; every rank waits for each write.
      Every rank checks its own ``checkpoint_path`` (which may be spelled differently on each, e.g.
      another mount point) and, with ``resume``, reads it: it must then be the same file, on a file
      system all ranks share. Resume is bit-exact for the same world size (bit for bit on the CPU).
    - Every rank must be given the same config, seed or generator state, model architecture, data
      (each rank reads all of it), ``checkpoint_every`` and ``resume``, and a ``checkpoint_path`` or
      none; these are compared before the first step (with ``resume``, after reading the checkpoint).

    Raises under a group (besides the above, on every rank alike): ValueError for a batch that W does
        not divide; :class:`~diffsde.distributed.world.DistributedError` when those arguments differ
        between ranks, when another rank's checks failed before the first step (that rank raises its
        own error), or when another rank fails or stops answering mid-run (after the group's timeout).
    """
    parallel = DataParallel.of_world()  # None without a process group: torch.distributed is then untouched
    try:
        state, device, batches, times, parameters, path = _prepare(model, data, config, device, generator,
                                                                   checkpoint_path, checkpoint_every, resume, parallel)
    except Exception as err:
        if parallel is not None:
            parallel.agree(None, err)  # the other ranks stop too, naming this rank's error
        raise
    config, forward = state.config, torch.compile(model) if compile_model else model
    if parallel is not None:
        parallel.agree(_settings(state, data, path, checkpoint_every, resume, compile_model))
        forward = parallel.wrap(forward, model, state.ema_model, state.step)

    main = parallel is None or parallel.rank == 0
    bar = tqdm(total=config.steps, initial=state.step, disable=not (progress and main), desc="train", leave=False)
    start, recent = state.step, torch.zeros(config.steps, device=device)
    saved = state.step if resume else None  # the step of the checkpoint now at `path`
    try:
        while state.step < config.steps:
            with contextlib.nullcontext() if parallel is None else parallel.collectives(f"step {state.step}"):
                recent[state.step] = _step(state, forward, batches, times, parameters, parallel)
            state.step += 1
            if state.step % _REFRESH == 0 or state.step == config.steps:
                _flush_losses(state, recent, start, parallel)
                bar.update(state.step - bar.n)
                bar.set_postfix(loss=f"{float(state.losses[max(0, state.step - _REFRESH):state.step].mean()):.4f}")
            if path is not None and (state.step == config.steps or
                                     (checkpoint_every is not None and state.step % checkpoint_every == 0)):
                _flush_losses(state, recent, start, parallel)
                _check_finite_weights(state)
                if parallel is None:
                    checkpoints.save_checkpoint(path, state)
                else:  # rank 0 writes; the others wait for it (and stop if it failed)
                    parallel.on_main(lambda: checkpoints.save_checkpoint(path, state),
                                     f"the write of the checkpoint of step {state.step}")
                saved = state.step
        _flush_losses(state, recent, start, parallel)
        _check_finite_weights(state)
    except TrainingDivergedError as err:
        kept = ("" if path is None else f"; no checkpoint was written to {str(path)!r}" if saved is None
                else f"; {str(path)!r} keeps the checkpoint of step {saved}, written while everything was finite")
        raise TrainingDivergedError(f"{err}{kept}", err.step, err.losses) from None
    finally:
        bar.close()
    return TrainResult(model, state.ema_model, state.losses.clone(), config)


def _prepare(model, data, config, device, generator, checkpoint_path, checkpoint_every, resume, parallel):
    """Every check of :func:`train`'s arguments, then the state before the first step (restored
    from the checkpoint with ``resume``): (state, device, batches, times, parameters, path)."""
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
    if parallel is not None and not isinstance(batches, IteratedBatches):  # an iterable's batches: checked per step
        parallel.check_batch_size(config.batch_size)
    times = TIME_SAMPLERS[config.time_sampling](config, device, dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
    check_fits(TRAINING_COPIES * weight_bytes, device, f"training a {type(model).__name__} of {weight_bytes:,} bytes "
                                                       f"of weights (with gradients, EMA and Adam's two moments)")
    model.to(device)
    state = TrainState.new(model, config, generator)
    if resume:
        checkpoints.load_checkpoint(path, map_location=device).restore(state)
        batches.skip(state.step)
    return state, device, batches, times, parameters, path


def _settings(state: TrainState, data: Any, path: Path | None, checkpoint_every: int | None, resume: bool,
              compile_model: bool) -> dict:
    """What every rank of a distributed run must have in common (compared before the first step)."""
    parameters = list(state.model.parameters())
    return {**{f"config.{name}": value for name, value in state.config.to_dict().items()},
            "generator state": generator_fingerprint(state.generator), "step": state.step,
            "model": f"{type(state.model).__name__} of {sum(p.numel() for p in parameters):,} parameters in "
                     f"{len(parameters)} tensors, {parameters[0].dtype} on {parameters[0].device.type}",
            "data": f"{type(data).__name__}{tuple(data.shape) if isinstance(data, Tensor) else ''}",
            "checkpoint_path given": path is not None, "checkpoint_every": checkpoint_every,
            "resume": resume, "compile_model": compile_model}


def _step(state: TrainState, forward: nn.Module, batches, times, parameters: list,
          parallel: DataParallel | None) -> Tensor:
    """One optimizer step; returns the detached minibatch loss. Draws x0, then t, then ε (the whole
    global batch; under a process group this rank then keeps its own rows of each)."""
    step, config, generator = state.step, state.config, state.generator
    x0 = batches.next(generator, step)
    t = times(x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if parallel is not None:
        rows = parallel.rows(x0.shape[0], step)
        x0, t, noise = x0[rows], t[rows], noise[rows]
    loss = eps_loss(forward, x0, t, noise)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under a process group DDP averages the gradients over the ranks here
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    _update_ema(state.ema_model, state.model, min(config.ema_decay, (1 + step) / (10 + step)))
    return loss.detach()


_REFRESH = 50  # progress-bar refresh interval (steps); losses leave the device only then


def _flush_losses(state: TrainState, recent: Tensor, start: int, parallel: DataParallel | None) -> None:
    """Copy the losses of steps start..step-1, computed on the device, into the CPU history
    (one synchronisation; earlier ones came from the checkpoint), and stop at the first that is
    not finite. Under a process group the new losses are first averaged over the ranks (one
    all-reduce), so every rank records, and stops at, the same global-batch losses."""
    if parallel is not None:
        parallel.average_losses(recent, state.step)
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

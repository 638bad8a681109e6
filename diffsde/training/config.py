"""The hyper-parameters of a training run, checked once, stored in checkpoints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .._checks import check_choice, check_int, check_real
from ..schedules import SCHEDULES, BetaSchedule
from .data import TIME_SAMPLERS

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`~diffsde.training.train`; everything needed to reproduce a run
    (with the model's config).

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
            the schedule ``schedule``/``schedule_n`` (Ho et al. 2020, Algorithm 1: t ~ U{1..T}), at its
            EXACT times ``τ_i = -log ᾱ_i``, where the OU marginal is exactly DDPM's q(x_i | x0). That is where
            :func:`diffsde.ddpm.vlb` and a sampler on ``schedule.grid(exact_times=True)`` query
            the network; the step-sum times t_i = Σ β_j would be off by O(β) from the ᾱ_i the chain uses.
        t_min: lower end of "uniform" times, ``0 < t_min < T`` (OU time); unused by "grid".
        T: upper end of "uniform" times, ``t_min < T < inf`` (OU time); unused by "grid".
        schedule: the "grid" schedule, a name in :data:`diffsde.schedules.SCHEDULES` ("linear" or
            "cosine"); unused by "uniform".
        schedule_n: its number of steps; unused by "uniform".
        seed: seed of the run's generator (when :func:`~diffsde.training.train` is not handed one).

    Raises:
        TypeError: a field of the wrong type (e.g. ``batch_size=2.0``).
        ValueError: a field outside its range, an unknown name, or a "grid" schedule whose β
            leave (0, 1) (the linear one with schedule_n <= 20).
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
        # Checked values are stored back as plain Python ints / floats (a numpy scalar could not be
        # read back from a checkpoint with weights_only=True).
        checked = {
            "steps": check_int(self.steps, "steps", minimum=1),
            "batch_size": check_int(self.batch_size, "batch_size", minimum=1),
            "warmup_steps": check_int(self.warmup_steps, "warmup_steps", minimum=0),
            "schedule_n": check_int(self.schedule_n, "schedule_n", minimum=1),
            "seed": check_int(self.seed, "seed", minimum=0),
            "lr": check_real(self.lr, "lr", 0, low_open=True),
            "final_lr_fraction": check_real(self.final_lr_fraction, "final_lr_fraction", 0, 1),
            "ema_decay": check_real(self.ema_decay, "ema_decay", 0, 1, high_open=True),
            "grad_clip": check_real(self.grad_clip, "grad_clip", 0, low_open=True, none_ok=True),
            "T": check_real(self.T, "T", 0, low_open=True),
        }
        checked["t_min"] = check_real(self.t_min, "t_min", 0, checked["T"], low_open=True, high_open=True,
                                      interval=f"(0, T) = (0, {checked['T']:g})")
        check_choice(self.time_sampling, "time_sampling", TIME_SAMPLERS)
        check_choice(self.schedule, "schedule", SCHEDULES)
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.time_sampling == "grid":
            self.beta_schedule()  # refuses e.g. the linear schedule with schedule_n <= 20

    def beta_schedule(self) -> BetaSchedule:
        """The "grid" schedule ``SCHEDULES[schedule](schedule_n)``."""
        return SCHEDULES[self.schedule](self.schedule_n)

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

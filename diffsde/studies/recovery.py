"""Gaussian recovery: does a learned score, sampled with every sampler, give back its Gaussian p0?

A recovery run trains an :class:`~diffsde.EpsilonMLP` on p0 = N(μ, Σ) (:func:`fit_gaussian`),
samples it with each :class:`SamplerCase` on the linear schedule's grid at exact times
τ_i = -log ᾱ_i (:func:`sampling_grid`), and compares the sample moments with p0 (whitened,
:func:`~diffsde.studies.allowances.whitened_errors`) against a tolerance built from the
mathematics rather than tuned: the sum of the discretization, learning and sampling
allowances of :mod:`diffsde.studies.allowances` (tests/test_recovery.py,
benchmarks/recovery_report.py). Times are forward OU times (the documentation's conventions page).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable

import torch
from torch import Tensor

from ..metrics import gaussian_w2
from ..nets import EpsilonMLP
from ..samplers import sample
from ..schedules import BetaSchedule, TimeGrid
from ..scores import GaussianScore
from ..training import TrainConfig, TrainResult, train
from .allowances import (FLOWS, RK45_TOLERANCE, ScoreErrorProfile, discretization_allowance, learning_allowance,
                         sampling_allowance, whitened_errors)

__all__ = ["FAST", "GOOD", "gaussian_2d", "fit_gaussian", "SamplerCase", "SAMPLER_CASES", "PC_STEP",
           "RecoverySize", "SMALL", "FULL", "for_size", "sampling_grid", "RecoveryRow", "recover"]

Score = Callable[[Tensor, float], Tensor]

# --------------------------------------------------------------------------------------
# The toy and its training.
# --------------------------------------------------------------------------------------

# Measured on a 2-core CPU (one torch thread; EMA weights, seed 0), relative L2 score error
# sqrt(E‖s_θ - s‖² / E‖s‖²) under p_t (20000 exact samples):
#     config  hidden  time    t=0.05  t=0.3  t=1    t=3
#     FAST    64      3.4 s   0.060   0.029  0.013  0.010   (1500 steps x 1024)
#     FAST    128     5.7 s   0.039   0.026  0.012  0.009
#     GOOD    64      11.6 s  0.033   0.019  0.011  0.005   (4000 steps x 2048)
#     GOOD    128     28.5 s  0.027   0.012  0.009  0.005
# Both sample times on the linear schedule's grid (exact times τ_i, lr 3e-3, 100 warm-up steps):
# it puts far more weight on small t than U[t_min, T] does, and small t is where the score is
# hard to learn; uniform times give 0.13 / 0.049 / 0.015 / 0.008 (FAST) and 0.091 / 0.028 /
# 0.013 / 0.004 (GOOD).
FAST = TrainConfig(steps=1500, batch_size=1024, lr=3e-3, warmup_steps=100, time_sampling="grid")
GOOD = TrainConfig(steps=4000, batch_size=2048, lr=3e-3, warmup_steps=100, time_sampling="grid")


def gaussian_2d() -> GaussianScore:
    """p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): correlated (0.6), with variances on both sides of 1."""
    return GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))


@functools.lru_cache(maxsize=4)
def fit_gaussian(device: str = "cpu", config: TrainConfig = FAST, hidden: int = 64, seed: int = 0) -> TrainResult:
    """Train ``EpsilonMLP(2, hidden)`` on :func:`gaussian_2d` (float32) with ``config``; cached
    per (device, config, hidden, seed), so the tests and a report share one run.

    ``seed`` sets the initial weights (drawn from torch's global CPU generator under
    ``torch.manual_seed(seed)``; the run itself draws from its own generator).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    torch.manual_seed(seed)
    model = EpsilonMLP(2, hidden=hidden)
    return train(model, gaussian_2d(), config, device=device)


# --------------------------------------------------------------------------------------
# Sampler cases and run sizes.
# --------------------------------------------------------------------------------------



@dataclass(frozen=True)
class SamplerCase:
    """One way of sampling: ``sample(score, method, **options)``.

    Attributes:
        name: the label in tables and test ids.
        method: the ``sample`` method name.
        options: its keyword options.
        flow: "ode" (the probability-flow ODE) or "sde" (the reverse SDE or a discretization of it).
        corrector_step: pc's Langevin step ε (0 for the other methods).
        both_ends: the step averages the drift at its two ends (Heun; RK45 follows the continuous
            flow, for which the trapezoid rule is the closer quadrature) instead of using its start only.
    """

    name: str
    method: str
    options: dict
    flow: str
    corrector_step: float = 0.0
    both_ends: bool = False

    def __post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"SamplerCase.flow must be one of {list(FLOWS)}, got {self.flow!r}")
        if isinstance(self.corrector_step, bool) or not isinstance(self.corrector_step, Real) \
                or not 0 <= self.corrector_step < math.inf:
            raise ValueError(f"SamplerCase.corrector_step must be a finite number >= 0, got {self.corrector_step!r}")


# pc's Langevin step: a number (not Song's snr rule) makes pc affine on Gaussian data, so that
# exact_output_law gives its law. It is 2 / n on an n-step grid (0.02 at n = 100; about a fifth of the
# mean step T / n): a step that does not shrink with n would pile up n corrector moves near t_min,
# where the learned score is worst (at n = 1000, a step of 0.02 gives a learning bound of 0.58 on the
# covariance, against 0.05 with 0.002). See for_size().
PC_STEP = 0.02
SAMPLER_CASES = (
    SamplerCase("vp", "vp", {}, "sde"),
    SamplerCase("ddpm-beta", "ddpm", {"variance": "beta"}, "sde"),
    SamplerCase("ddpm-beta_tilde", "ddpm", {"variance": "beta_tilde"}, "sde"),
    SamplerCase("em", "em", {}, "sde"),
    SamplerCase("ode-euler", "ode", {"solver": "euler"}, "ode"),
    SamplerCase("ode-heun", "ode", {"solver": "heun"}, "ode", both_ends=True),
    SamplerCase("ode-RK45", "ode", {"solver": "RK45", "rtol": RK45_TOLERANCE, "atol": RK45_TOLERANCE}, "ode",
                both_ends=True),
    SamplerCase("torchsde-euler", "torchsde", {"solver": "euler"}, "sde"),
    SamplerCase("pc", "pc", {"predictor": "em", "corrector_steps": 1, "step_size": PC_STEP}, "sde", PC_STEP),
)


@dataclass(frozen=True)
class RecoverySize:
    """How big a recovery run is.

    Attributes:
        config: the training configuration.
        hidden: the network's hidden width.
        steps: the sampling grid's steps (the linear schedule's ``steps``-step grid at exact times,
            from T down to its first time >= ``t_min``).
        n_samples: samples drawn per sampler.
        profile_samples: exact samples per time for the score-error profile.
        t_min: where the sampling grid ends.
    """

    config: TrainConfig
    hidden: int
    steps: int
    n_samples: int
    profile_samples: int
    t_min: float = 1e-3

    def __post_init__(self):
        for name, low in (("hidden", 1), ("steps", 1), ("n_samples", 2), ("profile_samples", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"RecoverySize.{name} must be an int >= {low}, got {value!r}")


SMALL = RecoverySize(FAST, hidden=64, steps=100, n_samples=10_000, profile_samples=4000)
FULL = RecoverySize(GOOD, hidden=128, steps=1000, n_samples=200_000, profile_samples=20_000)


def for_size(case: SamplerCase, size: RecoverySize) -> SamplerCase:
    """``case`` as run at ``size``: a corrector step (pc's) becomes 2 / size.steps (see PC_STEP)."""
    if not case.corrector_step:
        return case
    step = 2.0 / size.steps
    return dataclasses.replace(case, options={**case.options, "step_size": step}, corrector_step=step)


def sampling_grid(size: RecoverySize) -> TimeGrid:
    """The linear schedule's grid at exact times τ_i = -log ᾱ_i (where training put its times)."""
    return BetaSchedule.linear(size.steps).grid(t_min=size.t_min, exact_times=True)


# --------------------------------------------------------------------------------------
# One recovery run.
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecoveryRow:
    """One sampler's recovery: measured errors (sample moments vs the truth) and allowances.

    Attributes:
        case: the sampler case as run (:func:`for_size`).
        mean_error, cov_error: whitened errors of the sample moments against p0.
        w2: exact W2 between N(sample mean, sample cov) and p0.
        discretization, learning, sampling: the (mean, cov) allowances.
        nfe: score evaluations per sample.
        seconds: the sampling wall time.
    """

    case: SamplerCase
    mean_error: float
    cov_error: float
    w2: float
    discretization: tuple[float, float]
    learning: tuple[float, float]
    sampling: tuple[float, float]
    nfe: int
    seconds: float

    @property
    def mean_tolerance(self) -> float:
        """The sum of the three mean allowances."""
        return self.discretization[0] + self.learning[0] + self.sampling[0]

    @property
    def cov_tolerance(self) -> float:
        """The sum of the three covariance allowances."""
        return self.discretization[1] + self.learning[1] + self.sampling[1]


def recover(case: SamplerCase, score: Score, truth: GaussianScore, size: RecoverySize, profile: ScoreErrorProfile,
            device: str = "cpu", seed: int = 2) -> RecoveryRow:
    """Sample ``size.n_samples`` points with ``case`` (as :func:`for_size` runs it) and the learned
    ``score`` on :func:`sampling_grid` from N(0, I); compare their moments with the truth.

    ``profile`` must hold every time of the sampling grid (:func:`learning_allowance`).
    """
    case = for_size(case, size)
    grid = sampling_grid(size)
    discretization = discretization_allowance(case, truth, grid)
    learning = learning_allowance(case, truth, grid, profile)
    sampling = sampling_allowance(size.n_samples, 1.0 + discretization[1] + learning[1])
    generator = torch.Generator(device=device).manual_seed(seed)
    started = time.perf_counter()
    with torch.no_grad():
        x, info = sample(score, case.method, grid=grid, n_samples=size.n_samples, generator=generator,
                         device=device, return_info=True, **case.options)
    seconds = time.perf_counter() - started
    x = x.to("cpu", torch.float64)
    mean, cov = x.mean(0), torch.cov(x.T)
    mean_error, cov_error = whitened_errors(mean, cov, truth)
    w2 = gaussian_w2(mean, cov, *truth.mean_and_cov(0.0))
    return RecoveryRow(case, mean_error, cov_error, w2, discretization, learning, sampling, info["nfe"], seconds)

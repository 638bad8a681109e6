"""A quick, reliable fit of :class:`EpsilonMLP` to a 2-D Gaussian, for tests that need a learned score,
and the machinery of the Gaussian recovery test (every sampler, with tolerances built from an exact
discretization law, a learning-error bound and the sample size; used by tests/test_recovery.py and
benchmarks/recovery_report.py).

``fit_gaussian()`` trains once per (device, config, hidden, seed) and caches the result.
Measured on the 2-core CPU (one torch thread; EMA weights, seed 0), relative L2 score error
``sqrt(E‖s_θ - s‖² / E‖s‖²)`` under p_t (20000 exact samples):

    config  hidden  time    t=0.05  t=0.3  t=1    t=3
    FAST    64      3.4 s   0.060   0.029  0.013  0.010   (1500 steps x 1024)
    FAST    128     5.7 s   0.039   0.026  0.012  0.009
    GOOD    64      11.6 s  0.033   0.019  0.011  0.005   (4000 steps x 2048)
    GOOD    128     28.5 s  0.027   0.012  0.009  0.005

Both sample times on the linear schedule's grid (exact times τ_i, lr 3e-3, 100 warm-up
steps): it puts far more weight on small t than U[t_min, T] does, and small t is where
the score is hard to learn; uniform times give 0.13 / 0.049 / 0.015 / 0.008 (FAST) and
0.091 / 0.028 / 0.013 / 0.004 (GOOD).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from diffsde import BetaSchedule, TimeGrid, exact_output_law, metrics, sample
from diffsde.nets import EpsilonMLP
from diffsde.scores import GaussianScore
from diffsde.training import TrainConfig, TrainResult, train

FAST = TrainConfig(steps=1500, batch_size=1024, lr=3e-3, warmup_steps=100, time_sampling="grid")
GOOD = TrainConfig(steps=4000, batch_size=2048, lr=3e-3, warmup_steps=100, time_sampling="grid")


def gaussian_2d() -> GaussianScore:
    """p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): correlated, with variances on both sides of 1."""
    return GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))


@functools.lru_cache(maxsize=4)
def fit_gaussian(device: str = "cpu", config: TrainConfig = FAST, hidden: int = 64, seed: int = 0) -> TrainResult:
    """Train ``EpsilonMLP(2, hidden)`` on :func:`gaussian_2d` (float32); cached."""
    torch.manual_seed(seed)  # the initial weights; the run itself draws from its own generator
    model = EpsilonMLP(2, hidden=hidden)
    return train(model, gaussian_2d(), config, device=device)


def relative_score_error(score, exact: GaussianScore, t: float, n: int = 20000, seed: int = 1,
                         device: str = "cpu") -> float:
    """``sqrt(E‖score - exact‖² / E‖exact‖²)`` over n exact samples of p_t (float32 inputs)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x = exact.sample(n, t=t, generator=generator, device=device, dtype=torch.float32)
    with torch.no_grad():
        error = (score(x, t) - exact.score(x, t)).pow(2).sum(-1).mean()
        scale = exact.score(x, t).pow(2).sum(-1).mean()
    return float((error / scale).sqrt())


# --------------------------------------------------------------------------------------
# Recovery of the Gaussian by every sampler (tests/test_recovery.py, benchmarks/recovery_report.py)
# --------------------------------------------------------------------------------------
#
# Errors are measured in the data's own whitened units: for an output law N(m, C) and the truth
# p0 = N(μ, Σ),  mean error = ‖Σ^{-1/2} (m - μ)‖  and  cov error = ‖Σ^{-1/2} C Σ^{-1/2} - I‖₂
# (so 0.05 means "5% of a standard deviation" / "5% of a variance", in the worst direction).
# A sample's error splits (triangle inequality) into
#   discretization: the sampler's exact output law with the EXACT score (diffsde.exact_output_law)
#                   vs the truth; it includes t_min > 0 and the N(0, I) prior in place of p_T;
#   learning:       the same sampler with the learned score vs with the exact one; bounded to first
#                   order from the measured score error (learning_allowance);
#   sampling:       the sample moments vs the sampler's law (sampling_allowance).

RK45_TOLERANCE = 1e-4
# RK45 at rtol = atol = 1e-4 on the exact score (so affine, with a closed-form flow) leaves a
# per-sample whitened error of at most 6.5e-4 (rms 1.6e-4; measured on 5000 paths of the linear
# 100-step grid): moments move by less than that (mean) and 2 x rms + max² (cov); 2e-3 covers both.
RK45_SOLVER_ALLOWANCE = 2e-3


@dataclass(frozen=True)
class SamplerCase:
    """One way of sampling: ``sample(score, method, **options)``; ``flow`` is "ode" (probability-flow
    ODE) or "sde" (reverse SDE or a discretization of it); ``corrector_step`` is pc's Langevin step;
    ``both_ends``: the step averages the drift at its two ends (Heun; RK45 follows the continuous
    flow, for which the trapezoid rule is the closer quadrature) instead of using its start only."""

    name: str
    method: str
    options: dict
    flow: str
    corrector_step: float = 0.0
    both_ends: bool = False


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
    """How big a recovery run is: training (config, hidden width), the sampling grid (the linear
    schedule's ``steps``-step grid at exact times, from T down to its first time >= ``t_min``), the
    number of samples, and the exact samples per time for the score-error profile."""

    config: TrainConfig
    hidden: int
    steps: int
    n_samples: int
    profile_samples: int
    t_min: float = 1e-3


SMALL = RecoverySize(FAST, hidden=64, steps=100, n_samples=10_000, profile_samples=4000)
FULL = RecoverySize(GOOD, hidden=128, steps=1000, n_samples=200_000, profile_samples=20_000)


def for_size(case: SamplerCase, size: RecoverySize) -> SamplerCase:
    """``case`` as run at ``size``: pc's corrector step becomes 2 / size.steps (see PC_STEP)."""
    if case.method != "pc":
        return case
    step = 2.0 / size.steps
    return dataclasses.replace(case, options={**case.options, "step_size": step}, corrector_step=step)


def sampling_grid(size: RecoverySize) -> TimeGrid:
    """The linear schedule's grid at exact times τ_i = -log ᾱ_i (where training put its times)."""
    return BetaSchedule.linear(size.steps).grid(t_min=size.t_min, exact_times=True)


def _symmetric_power(matrix: Tensor, power: float) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values ** power) @ vectors.T


def whitened_errors(mean: Tensor, cov: Tensor, truth: GaussianScore) -> tuple[float, float]:
    """(‖Σ^{-1/2}(m - μ)‖, ‖Σ^{-1/2} C Σ^{-1/2} - I‖₂) of N(m, C) against p0 = N(μ, Σ), in float64."""
    mu, sigma = truth.mean_and_cov(0.0)
    root = _symmetric_power(sigma, -0.5)
    mean, cov = mean.detach().to("cpu", torch.float64), cov.detach().to("cpu", torch.float64)
    identity = torch.eye(mu.shape[0], dtype=torch.float64)
    return float((root @ (mean - mu)).norm()), float(torch.linalg.matrix_norm(root @ cov @ root - identity, 2))


def discretization_law(case: SamplerCase, truth: GaussianScore, grid: TimeGrid) -> tuple[Tensor, Tensor]:
    """The exact output law (float64) of ``case`` on ``grid`` with the exact score, started from N(0, I).

    Fixed-step methods: :func:`diffsde.exact_output_law` itself. torchsde's Euler on a grid is
    Euler–Maruyama on the same reverse SDE with the same steps (x + h f + sqrt(h) z), so it has em's
    law. Adaptive RK45 integrates the probability-flow ODE to its tolerance: its law is the exact
    flow's, computed as Heun on a 4000-step geometric grid with the same ends (Heun's O(h²) error is
    ~1e-6 there), plus :data:`RK45_SOLVER_ALLOWANCE` for the solver's own tolerance.
    """
    if case.method == "torchsde":
        return exact_output_law("em", truth, grid=grid, start="prior")
    if case.method == "ode" and case.options["solver"] not in ("euler", "heun"):
        T, t_min = float(grid.times[0]), float(grid.times[-1])
        times = torch.logspace(math.log10(T), math.log10(t_min), 4001, dtype=torch.float64)
        times[0], times[-1] = T, t_min
        return exact_output_law("ode", truth, grid=TimeGrid.from_times(times), start="prior", solver="heun")
    return exact_output_law(case.method, truth, grid=grid, start="prior", **case.options)


def discretization_allowance(case: SamplerCase, truth: GaussianScore, grid: TimeGrid) -> tuple[float, float]:
    """Whitened (mean, cov) error of the exact-score output law against p0 (see :func:`discretization_law`)."""
    mean_error, cov_error = whitened_errors(*discretization_law(case, truth, grid), truth)
    if case.method == "ode" and case.options["solver"] not in ("euler", "heun"):
        mean_error, cov_error = mean_error + RK45_SOLVER_ALLOWANCE, cov_error + RK45_SOLVER_ALLOWANCE
    return mean_error, cov_error


@dataclass(frozen=True)
class ScoreErrorProfile:
    """The learned score's error δ = s_θ - s under p_t at each time of a grid (float64, CPU), whitened
    by p_t's covariance Σ_t: w = Σ_t^{-1/2} δ, z = Σ_t^{-1/2} (x - m_t).

    Attributes:
        times: (K,) forward times.
        mean_error: (K,) ‖E w‖ (the mean of the whitened error).
        cross_error: (K,) ‖E[w zᵀ] + E[z wᵀ]‖₂ (how the error co-varies with the state).
        rms_error: (K,) sqrt(E‖w‖²).
        relative_error: (K,) sqrt(E‖δ‖² / E‖s‖²), the relative L2 error.
    """

    times: Tensor
    mean_error: Tensor
    cross_error: Tensor
    rms_error: Tensor
    relative_error: Tensor


def score_error_profile(score, truth: GaussianScore, times, n: int, seed: int = 1,
                        device: str = "cpu") -> ScoreErrorProfile:
    """Measure :class:`ScoreErrorProfile` with n exact float32 samples of p_t per time (one generator)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for t in [float(t) for t in times]:
        x = truth.sample(n, t=t, generator=generator, device=device, dtype=torch.float32)
        with torch.no_grad():
            learned = score(x, t).double()
        exact = truth.score(x.double(), t)
        mean_t, cov_t = truth.mean_and_cov(t)
        root = _symmetric_power(cov_t, -0.5).to(device)
        w = (learned - exact) @ root
        z = (x.double() - mean_t.to(device)) @ root
        cross = w.T @ z / n
        rows.append([float(w.mean(0).norm()), float(torch.linalg.matrix_norm(cross + cross.T, 2)),
                     float(w.pow(2).sum(-1).mean().sqrt()),
                     float(((learned - exact).pow(2).sum(-1).mean() / exact.pow(2).sum(-1).mean()).sqrt())])
    values = torch.tensor(rows, dtype=torch.float64).T
    return ScoreErrorProfile(torch.tensor([float(t) for t in times], dtype=torch.float64), *values)


def propagation_gain(truth: GaussianScore, t: float, flow: str) -> float:
    """‖Σ_0^{-1/2} P(0←t) Σ_t^{1/2}‖₂: how much a unit whitened perturbation of the state at time t
    moves the whitened output, for the linear flow of the exact Gaussian problem.

    All Σ_t = e^{-t} Σ + (1 - e^{-t}) I share Σ's eigenvectors; along one with eigenvalue λ,
    σ_t² = 1 + (λ - 1) e^{-t}. The probability-flow ODE (drift ½(I - Σ_t^{-1}) x + ...) maps time t
    to 0 by P = Σ_0^{1/2} Σ_t^{-1/2}, so the gain is 1. The reverse SDE's mean (drift ½ x + s,
    Jacobian ½ I - Σ_t^{-1}) is carried by P = λ e^{-t/2} / σ_t² (from ∫_0^t σ_u^{-2} du =
    log((e^t + λ - 1) / λ)), so the gain is max_λ sqrt(λ) e^{-t/2} / σ_t <= 1: the SDE forgets.
    """
    if flow == "ode":
        return 1.0
    eigenvalues = torch.linalg.eigvalsh(truth.mean_and_cov(0.0)[1])
    sigma = (1 + (eigenvalues - 1) * math.exp(-t)).sqrt()
    return float((eigenvalues.sqrt() * math.exp(-t / 2) / sigma).max())


def learning_allowance(case: SamplerCase, truth: GaussianScore, grid: TimeGrid,
                       profile: ScoreErrorProfile) -> tuple[float, float]:
    """A first-order bound on the whitened (mean, cov) change that the score error δ causes.

    A drift perturbation c δ(x, t) over a step of length h changes, to first order in δ, the mean
    by c h E[δ] and the covariance by c h (E[δ (x - m)ᵀ] + transpose), which the exact problem's
    linear flow then carries to the output (:func:`propagation_gain`, g). Whitening and the
    triangle inequality over the steps give
        mean <= Σ_k c h_k g_k ‖E w_k‖,        cov <= Σ_k c h_k g_k² ‖E[w zᵀ + z wᵀ]‖₂,
    with c = ½ for the probability-flow ODE (drift ½ x + ½ s) and c = 1 for the reverse SDE and its
    discretizations (vp and ddpm move the mean by β / sqrt(1 - β) δ = h δ (1 + O(h))); pc's
    Langevin corrector adds ε δ at the step's end time. δ is averaged under the exact p_t (the
    sampler's own marginals differ by the small errors being bounded), at the time each step
    evaluates it (half at each end for ``both_ends``). ``profile`` must hold every time of ``grid``.

    The remainder beyond the first-order bound B is added as 2 B²: an error proportional to the
    state multiplies the covariance by about e^B, whose second-order term is B² / 2, and the
    discrete samplers' propagators differ from the continuous ones by O(h). For such an error,
    aligned with the state at every time (so the triangle inequality is an equality), em and the
    ODE's Euler on the 100- and 1000-step grids exceed B by 1.05 B² to 1.1 B² (measured); 2 B² covers it.
    """
    times = profile.times.tolist()
    index = {round(t, 12): k for k, t in enumerate(times)}

    def at(t: float) -> int:
        return index[round(float(t), 12)]

    weight = 0.5 if case.flow == "ode" else 1.0
    mean_bound = cov_bound = 0.0
    for interval in grid.intervals():
        share = 0.5 if case.both_ends else 1.0
        pieces = ((interval.t_from, share * weight * interval.h), (interval.t_to, (1 - share) * weight * interval.h),
                  (interval.t_to, case.corrector_step))
        for t, length in pieces:
            if length == 0.0:
                continue
            gain = propagation_gain(truth, t, case.flow)
            k = at(t)
            mean_bound += length * gain * float(profile.mean_error[k])
            cov_bound += length * gain ** 2 * float(profile.cross_error[k])
    return mean_bound + 2 * mean_bound ** 2, cov_bound + 2 * cov_bound ** 2


# Quantiles for the sampling allowance (two-sided checks at p = 1e-4 each).
CHI2_2 = 18.42  # scipy.stats.chi2.isf(1e-4, 2)
CHI2_3 = 21.11  # scipy.stats.chi2.isf(1e-4, 3)


def sampling_allowance(n: int, cov_scale: float) -> tuple[float, float]:
    """Whitened (mean, cov) error of n-sample moments that a Gaussian law N(m, C) exceeds with
    probability <= 1e-4 each, for ‖C_w‖ <= cov_scale (C_w the whitened output covariance).

    Mean: Σ^{-1/2}(m̂ - m) ~ N(0, C_w / n), so its squared norm is <= ‖C_w‖ χ²₂ / n. Covariance:
    with y = C_w^{-1/2} x_w, Ĉ_w - C_w = C_w^{1/2} (S_y - I) C_w^{1/2} and ‖S_y - I‖²_F =
    E11² + E22² + 2 E12² ≈ (2 / n) χ²₃ (var 2/n, 2/n, 1/n; uncorrelated for a Gaussian), so
    ‖Ĉ_w - C_w‖₂ <= ‖C_w‖ sqrt(2 χ²₃ / n). (Gaussian fourth moments: the learned law is Gaussian
    up to the small errors being bounded.)
    """
    return math.sqrt(cov_scale * CHI2_2 / n), cov_scale * math.sqrt(2 * CHI2_3 / n)


@dataclass(frozen=True)
class RecoveryRow:
    """One sampler's recovery: measured errors (sample moments vs the truth) and allowances."""

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
        return self.discretization[0] + self.learning[0] + self.sampling[0]

    @property
    def cov_tolerance(self) -> float:
        return self.discretization[1] + self.learning[1] + self.sampling[1]


def recover(case: SamplerCase, score, truth: GaussianScore, size: RecoverySize, profile: ScoreErrorProfile,
            device: str = "cpu", seed: int = 2) -> RecoveryRow:
    """Sample ``size.n_samples`` points with ``case`` (:func:`for_size`) and the learned ``score``;
    compare with the truth."""
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
    w2 = metrics.gaussian_w2(mean, cov, *truth.mean_and_cov(0.0))
    return RecoveryRow(case, mean_error, cov_error, w2, discretization, learning, sampling, info["nfe"], seconds)

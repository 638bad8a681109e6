"""The error allowances of the Gaussian recovery test (:mod:`diffsde.studies.recovery`).

Errors are measured in the data's own whitened units (:func:`whitened_errors`): for an output
law N(m, C) and the truth p0 = N(μ, Σ), ``mean error = ‖Σ^{-1/2} (m - μ)‖`` and
``cov error = ‖Σ^{-1/2} C Σ^{-1/2} - I‖₂``. A sample's error splits (triangle inequality) into

* discretization (:func:`discretization_allowance`): the sampler's exact output law with the
  EXACT score (:func:`diffsde.exact_output_law`) against p0; it includes t_min > 0 and the
  N(0, I) prior in place of p_T;
* learning (:func:`learning_allowance`): a first-order bound on what the measured score error
  (:func:`score_error_profile`) does to the output, carried by the exact problem's linear flow
  (:func:`propagation_gain`);
* sampling (:func:`sampling_allowance`): the n-sample moments against the sampler's law, at
  the p = 1e-4 quantiles of their chi-square laws.

A sampler is described by a :class:`~diffsde.studies.recovery.SamplerCase` (its method,
options, flow, corrector step and whether it evaluates at both ends of a step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from ..exact_law import exact_output_law, has_exact_law
from ..schedules import TimeGrid
from ..scores import GaussianScore

if TYPE_CHECKING:
    from .recovery import SamplerCase

__all__ = ["RK45_TOLERANCE", "RK45_SOLVER_ALLOWANCE", "FLOWS", "whitened_errors", "discretization_law",
           "discretization_allowance", "ScoreErrorProfile", "score_error_profile", "propagation_gain",
           "learning_allowance", "sampling_allowance"]

Score = Callable[[Tensor, float], Tensor]

RK45_TOLERANCE = 1e-4
# RK45 at rtol = atol = 1e-4 on the exact score (so affine, with a closed-form flow) leaves a
# per-sample whitened error of at most 6.5e-4 (rms 1.6e-4; measured on 5000 paths of the linear
# 100-step grid): moments move by less than that (mean) and 2 x rms + max² (cov); 2e-3 covers both.
RK45_SOLVER_ALLOWANCE = 2e-3
FLOWS = ("ode", "sde")


def _check_truth(truth) -> GaussianScore:
    if not isinstance(truth, GaussianScore):
        raise TypeError(f"truth must be a GaussianScore (a Gaussian p0), got {type(truth).__name__}")
    return truth


def _symmetric_power(matrix: Tensor, power: float) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values ** power) @ vectors.T


def whitened_errors(mean: Tensor, cov: Tensor, truth: GaussianScore) -> tuple[float, float]:
    """``(‖Σ^{-1/2}(m - μ)‖, ‖Σ^{-1/2} C Σ^{-1/2} - I‖₂)`` of N(m, C) against p0 = N(μ, Σ), in float64.

    Args:
        mean: (d,) the law's mean m.
        cov: (d, d) its covariance C.
        truth: p0.

    Raises:
        TypeError: truth is not a GaussianScore. ValueError: shapes other than (d,) and (d, d).
    """
    mu, sigma = _check_truth(truth).mean_and_cov(0.0)
    d = mu.shape[0]
    if tuple(mean.shape) != (d,) or tuple(cov.shape) != (d, d):
        raise ValueError(f"mean and cov must have shapes ({d},) and ({d}, {d}), "
                         f"got {tuple(mean.shape)} and {tuple(cov.shape)}")
    root = _symmetric_power(sigma, -0.5)
    mean, cov = mean.detach().to("cpu", torch.float64), cov.detach().to("cpu", torch.float64)
    identity = torch.eye(d, dtype=torch.float64)
    return float((root @ (mean - mu)).norm()), float(torch.linalg.matrix_norm(root @ cov @ root - identity, 2))


def _adaptive_ode(case: SamplerCase) -> bool:
    """An ODE method without an exact output law: an adaptive solver, which follows the exact flow."""
    return case.flow == "ode" and not has_exact_law(case.method, **case.options)


def discretization_law(case: SamplerCase, truth: GaussianScore, grid: TimeGrid) -> tuple[Tensor, Tensor]:
    """The exact output law (float64) of ``case`` on ``grid`` with the exact score, started from N(0, I).

    A method with an exact law (every fixed-grid method, torchsde's included): :func:`diffsde.exact_output_law`
    itself. An adaptive ODE solver (RK45) integrates the probability-flow ODE to its tolerance: its law
    is the exact flow's, computed as Heun on a 4000-step geometric grid with the same ends (Heun's
    O(h²) error is ~1e-6 there); :func:`discretization_allowance` adds :data:`RK45_SOLVER_ALLOWANCE`
    for the solver's own tolerance.

    Raises:
        TypeError: truth is not a GaussianScore.
        ValueError: a method with neither law (an adaptive SDE solver).
    """
    _check_truth(truth)
    if has_exact_law(case.method, **case.options):
        return exact_output_law(case.method, truth, grid=grid, prior="normal", **case.options)
    if _adaptive_ode(case):
        T, t_min = float(grid.times[0]), float(grid.times[-1])
        times = torch.logspace(math.log10(T), math.log10(t_min), 4001, dtype=torch.float64)
        times[0], times[-1] = T, t_min
        return exact_output_law("ode", truth, grid=TimeGrid.from_times(times), prior="normal", solver="heun")
    raise ValueError(f"no exact discretization law for sampler case {case.name!r} "
                     f"(method {case.method!r}, options {case.options})")


def discretization_allowance(case: SamplerCase, truth: GaussianScore, grid: TimeGrid) -> tuple[float, float]:
    """Whitened (mean, cov) error of the exact-score output law against p0 (:func:`discretization_law`),
    plus :data:`RK45_SOLVER_ALLOWANCE` for an adaptive ODE solver."""
    mean_error, cov_error = whitened_errors(*discretization_law(case, truth, grid), truth)
    if _adaptive_ode(case):
        mean_error, cov_error = mean_error + RK45_SOLVER_ALLOWANCE, cov_error + RK45_SOLVER_ALLOWANCE
    return mean_error, cov_error


@dataclass(frozen=True)
class ScoreErrorProfile:
    """The learned score's error δ = s_θ - s under p_t at each of K times (float64, CPU), whitened
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


def score_error_profile(score: Score, truth: GaussianScore, times: Sequence[float], n: int, seed: int = 1,
                        device: str = "cpu") -> ScoreErrorProfile:
    """Measure :class:`ScoreErrorProfile` with n exact float32 samples of p_t per time (one generator
    seeded with ``seed``, on ``device``); ``score(x, t)`` takes float32 x and a float time.

    Raises:
        TypeError: truth is not a GaussianScore or score is not callable. ValueError: n < 2, or a
            time that is not a finite number >= 0.
    """
    _check_truth(truth)
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    times = [float(t) for t in times]
    if not all(0 <= t < math.inf for t in times):
        raise ValueError(f"times must be finite numbers >= 0, got {times}")
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for t in times:
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
    return ScoreErrorProfile(torch.tensor(times, dtype=torch.float64), *values)


def propagation_gain(truth: GaussianScore, t: float, flow: str) -> float:
    """‖Σ_0^{-1/2} P(0←t) Σ_t^{1/2}‖₂: how much a unit whitened perturbation of the state at time t
    moves the whitened output, for the linear flow of the exact Gaussian problem.

    All Σ_t = e^{-t} Σ + (1 - e^{-t}) I share Σ's eigenvectors; along one with eigenvalue λ,
    σ_t² = 1 + (λ - 1) e^{-t}. The probability-flow ODE (drift ½(I - Σ_t^{-1}) x + ...) maps time t
    to 0 by P = Σ_0^{1/2} Σ_t^{-1/2}, so the gain is 1. The reverse SDE's mean (drift ½ x + s,
    Jacobian ½ I - Σ_t^{-1}) is carried by P = λ e^{-t/2} / σ_t² (from ∫_0^t σ_u^{-2} du =
    log((e^t + λ - 1) / λ)), so the gain is max_λ sqrt(λ) e^{-t/2} / σ_t <= 1: the SDE forgets.

    Args:
        truth: p0.
        t: forward time >= 0.
        flow: "ode" or "sde".
    """
    _check_truth(truth)
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {list(FLOWS)}, got {flow!r}")
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
    evaluates it (half at each end for ``both_ends``).

    The remainder beyond the first-order bound B is added as 2 B²: an error proportional to the
    state multiplies the covariance by about e^B, whose second-order term is B² / 2, and the
    discrete samplers' propagators differ from the continuous ones by O(h). For such an error,
    aligned with the state at every time (so the triangle inequality is an equality), em and the
    ODE's Euler on the 100- and 1000-step grids exceed B by 1.05 B² to 1.1 B² (measured); 2 B² covers it.

    Raises:
        ValueError: ``profile`` lacks one of ``grid``'s times (to 1e-12).
    """
    _check_truth(truth)
    times = profile.times.tolist()
    index = {round(t, 12): k for k, t in enumerate(times)}

    def at(t: float) -> int:
        key = round(float(t), 12)
        if key not in index:
            raise ValueError(f"profile has no time {float(t)!r}: it must hold every time of the grid")
        return index[key]

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
    """Whitened (mean, cov) error of n-sample moments of a 2-D Gaussian law N(m, C) that is exceeded
    with probability <= 1e-4 each, for ‖C_w‖ <= cov_scale (C_w the whitened output covariance).

    Mean: Σ^{-1/2}(m̂ - m) ~ N(0, C_w / n), so its squared norm is <= ‖C_w‖ χ²₂ / n. Covariance:
    with y = C_w^{-1/2} x_w, Ĉ_w - C_w = C_w^{1/2} (S_y - I) C_w^{1/2} and ‖S_y - I‖²_F =
    E11² + E22² + 2 E12² ≈ (2 / n) χ²₃ (var 2/n, 2/n, 1/n; uncorrelated for a Gaussian), so
    ‖Ĉ_w - C_w‖₂ <= ‖C_w‖ sqrt(2 χ²₃ / n). (Gaussian fourth moments: the learned law is Gaussian
    up to the small errors being bounded.)

    Raises:
        ValueError: n not an int >= 2 or cov_scale not a positive finite number.
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if isinstance(cov_scale, bool) or not isinstance(cov_scale, Real) or not 0 < cov_scale < math.inf:
        raise ValueError(f"cov_scale must be a positive finite number, got {cov_scale!r}")
    return math.sqrt(cov_scale * CHI2_2 / n), cov_scale * math.sqrt(2 * CHI2_3 / n)

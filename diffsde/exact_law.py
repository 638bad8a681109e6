"""The exact output law of a fixed-step sampler on Gaussian data, with no Monte Carlo noise.

With a :class:`~diffsde.GaussianScore` the score is affine in x, and every fixed-step
method's step is affine in (x, z): ``x' = M x + c + N z`` with z the step's standard
normal noise. Started from N(m, C), the state stays Gaussian:

    m' = M m + c,        C' = M C Mᵀ + N Nᵀ.

M, c and N are read off the sampler's own step function (the same code that samples) by
evaluating it, in float64, on the probes x = 0, e_1..e_d with z = 0, and x = 0 with z = e_j:
c is the image of 0, the columns of M and N the images of the unit vectors minus c. So the
propagated law is the sampler's law exactly (up to float64 rounding), and a convergence
study against the exact p_{t_min} measures pure discretization error.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from .samplers import check_grid_for, plan, resolve_grid
from .schedules import BetaSchedule, TimeGrid
from .scores import GaussianScore

__all__ = ["exact_output_law", "has_exact_law"]


def exact_output_law(method: str, score: GaussianScore, schedule: BetaSchedule | None = None,
                     grid: Union[TimeGrid, Tensor, Sequence[float], None] = None, t_min: float | None = None,
                     *, exact_times: bool = False, start: Union[str, tuple[Tensor, Tensor]] = "exact",
                     **options) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d), float64, of what ``sample(score, method, ...)`` returns.

    Args:
        method: as for :func:`diffsde.sample`, and fixed-step ("vp", "ddpm", "em", "ode" with
            solver "euler" or "heun", or "pc" with a numeric ``step_size``).
        schedule: as for :func:`diffsde.sample`.
        grid: as for :func:`diffsde.sample`.
        t_min: as for :func:`diffsde.sample`.
        exact_times: as for :func:`diffsde.sample`.
        **options: the method's options, as for :func:`diffsde.sample`.
        score: a :class:`GaussianScore` (its score is affine in x).
        start: "exact" (the exact p_T, so only discretization error remains), "prior"
            (N(0, I), as the samplers start by default), or a (mean, cov) pair.

    Raises:
        TypeError: the score is not a GaussianScore.
        ValueError: the method is not fixed-step, or pc uses Song's batch-statistics step
            size (which is not affine in the state).
    """
    if not isinstance(score, GaussianScore):
        raise TypeError(f"exact_output_law needs an affine score (a GaussianScore), got {type(score).__name__}")
    run_plan = plan(method, options)
    if run_plan.fixed is None:
        raise ValueError(f"exact_output_law needs a fixed-step method; {method!r} with options {run_plan.options} "
                         f"is not (adaptive or torchsde-driven steps are not affine maps of the noise)")
    if not _is_affine(run_plan):
        raise ValueError("exact_output_law needs pc with a numeric step_size: Song's snr rule uses batch "
                         "statistics of the score, so the step is not an affine map of each sample")
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    check_grid_for(run_plan, time_grid, score)
    mean, cov = _start_law(score, start, time_grid.T)
    d = score.dim
    step, step_options, count = run_plan.fixed.step, run_plan.step_options, run_plan.fixed.noise_count
    eye = torch.eye(d, dtype=torch.float64)
    probes_x = torch.zeros(1 + d + count * d, d, dtype=torch.float64)
    probes_x[1:1 + d] = eye
    probes_noise = torch.zeros(count, 1 + d + count * d, d, dtype=torch.float64)
    for j in range(count):
        probes_noise[j, 1 + d + j * d:1 + d + (j + 1) * d] = eye
    for interval in time_grid.intervals():
        images = step(score, probes_x, interval, probes_noise, **step_options)
        offset = images[0]
        transition = (images[1:1 + d] - offset).T
        noise_map = (images[1 + d:] - offset).T
        mean = transition @ mean + offset
        cov = transition @ cov @ transition.T + noise_map @ noise_map.T
        cov = 0.5 * (cov + cov.T)
    return mean, cov


def has_exact_law(method: str, **options) -> bool:
    """Whether :func:`exact_output_law` can propagate ``method`` with ``options``: a fixed-step
    method whose step is affine in (x, z) for an affine score — not the adaptive ODE, not
    torchsde, and pc only with a numeric ``step_size`` (Song's snr rule uses batch statistics).
    Unknown methods or options raise as in :func:`diffsde.sample`."""
    run_plan = plan(method, options)
    return run_plan.fixed is not None and _is_affine(run_plan)


def _is_affine(run_plan) -> bool:
    return not (run_plan.method == "pc" and run_plan.step_options["step_size"] is None
                and run_plan.step_options["corrector_steps"])


def _start_law(score: GaussianScore, start, T: float) -> tuple[Tensor, Tensor]:
    d = score.dim
    if isinstance(start, str):
        if start == "exact":
            return score.mean_and_cov(T)
        if start == "prior":
            return torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
        raise ValueError(f"start must be 'exact', 'prior' or a (mean, cov) pair, got {start!r}")
    mean, cov = (torch.as_tensor(v, dtype=torch.float64) for v in start)
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"start must be a (mean (d,), cov (d, d)) pair with d = {d}, "
                         f"got shapes {tuple(mean.shape)} and {tuple(cov.shape)}")
    return mean, cov

"""The exact output law of a sampler on Gaussian data, with no Monte Carlo noise.

With a :class:`~diffsde.GaussianScore` the score is affine in x, and a method that declares
itself affine (:attr:`diffsde.samplers.Sampler.affine`: a fixed grid, no data-dependent step
sizes) returns

    x_out = A x_T + b + Σ_k C_k z_k,

with z_k its standard normal draws (for torchsde, the Brownian increments and Lévy areas,
standardised). Started from x_T ~ N(m, S), the output is Gaussian with

    mean = A m + b,        cov = A S Aᵀ + Σ_k C_k C_kᵀ.

A, b and the C_k are read off the method itself: the whole run (the same loop, steps, solver
state and runners that sample) is made once, in float64, on probe inputs — row 0 is x_T = 0
with all noise 0 (its output is b), rows 1..d are x_T = e_i (A's columns plus b), and each
scalar noise draw has its own block of d rows where that draw is e_j and everything else 0
(C's columns plus b). So multistep methods and torchsde's solvers (fed injected increments)
get their exact law too, and a convergence study against the exact p_{t_min} measures pure
discretization error.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_spd, real_float64
from .samplers import ProbeNoise, check_final, check_grid, integrate, resolve_grid, resolve_method, tweedie_start
from .samplers.registry import MethodLike
from .schedules import BetaSchedule, TimeGrid
from .scores import GaussianScore

__all__ = ["exact_output_law", "has_exact_law", "output_affine_map"]

PriorLike = Union[str, "tuple[Tensor, Tensor]"]
_START_ALIASES = {"exact": "exact", "prior": "normal"}


def exact_output_law(method: MethodLike, score: GaussianScore, schedule: BetaSchedule | None = None,
                     grid: Union[TimeGrid, Tensor, Sequence[float], None] = None, t_min: float | None = None,
                     *, exact_times: bool = False, prior: PriorLike | None = None,
                     start: PriorLike | None = None, final: str = "stop", **options: Any) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d), float64, of what ``sample(score, method, ...)`` returns.

    Args:
        method: as for :func:`diffsde.sample`; the method must declare itself affine (every
            fixed-grid method; pc with a numeric ``step_size``; torchsde without ``adaptive``).
        score: a :class:`GaussianScore` (its score is affine in x).
        schedule: as for :func:`diffsde.sample`.
        grid: as for :func:`diffsde.sample`.
        t_min: as for :func:`diffsde.sample`.
        exact_times: as for :func:`diffsde.sample`.
        prior: the law of x_T, with :func:`diffsde.sample`'s vocabulary and default: "normal"
            (N(0, I), as the samplers start by default), "exact" (the exact p_T, so only
            discretization error remains), "tweedie" (N(0, I) moved by
            :func:`diffsde.samplers.tweedie_start`), or a (mean (d,), cov (d, d)) pair of real
            arrays, the covariance symmetric positive-definite.
        start: the older name of ``prior`` ("exact", "prior" meaning "normal", or a pair);
            give one of the two.
        final: as for :func:`diffsde.sample`: "stop" at the grid's t_min, or "denoise" to t = 0
            (Tweedie's formula, affine for a Gaussian score).
        **options: the method's options, as for :func:`diffsde.sample`.

    Raises:
        TypeError: the score is not a GaussianScore; a prior that is not a pair of real arrays.
        ValueError: the method is not affine (adaptive steps; pc with Song's batch-statistics
            step size); a grid the method cannot use (:func:`diffsde.samplers.check_grid`, e.g.
            ᾱ underflowing float64 for "ddpm"); a bad prior (wrong shapes, a non-finite mean, a
            covariance that is not symmetric positive-definite, a complex one).
    """
    if start is not None:
        if prior is not None:
            raise TypeError("give prior or its older name start, not both")
        prior = _START_ALIASES.get(start, start) if isinstance(start, str) else start
        if isinstance(prior, str) and prior not in ("normal", "exact"):
            raise ValueError(f"start must be 'exact', 'prior' or a (mean, cov) pair, got {start!r}")
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    A, b, C = _affine_map(resolve_method(method, **options), score, time_grid, final)
    mean, cov = _prior_law(score, "normal" if prior is None else prior, time_grid.T)
    out_cov = A @ cov @ A.T + C @ C.T
    return A @ mean + b, 0.5 * (out_cov + out_cov.T)


def output_affine_map(method: MethodLike, score: GaussianScore, schedule: BetaSchedule | None = None,
                      grid: Union[TimeGrid, Tensor, Sequence[float], None] = None, t_min: float | None = None,
                      *, exact_times: bool = False, final: str = "stop",
                      **options: Any) -> tuple[Tensor, Tensor, Tensor]:
    """(A (d, d), b (d,), C (d, m·n·d)), float64: the sampler's output as ``A x_T + b + C z`` with
    z the run's m·n·d standard normal scalars (m draws of d coordinates per step, n steps, in the
    order the run draws them), read off the method by probes (module docstring).

    Raises:
        As :func:`exact_output_law`.
    """
    return _affine_map(resolve_method(method, **options), score, resolve_grid(schedule, grid, t_min, exact_times),
                       final)


def _affine_map(sampler, score: GaussianScore, time_grid: TimeGrid,
                final: str = "stop") -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(score, GaussianScore):
        raise TypeError(f"exact_output_law needs an affine score (a GaussianScore), got {type(score).__name__}")
    if not sampler.affine:
        raise ValueError(f"exact_output_law needs a method that is affine in (x_T, noise); {sampler.label!r} with "
                         f"options {dict(sampler.options)} is not (adaptive steps, or pc with Song's snr rule, "
                         f"which uses batch statistics of the score): give pc a numeric step_size")
    check_grid(sampler, time_grid, score)
    check_final(final, time_grid)
    d = score.dim
    noise = ProbeNoise(first_row=1 + d, draws_per_step=sampler.noise_draws, dim=d)
    probes = torch.zeros(noise.rows(time_grid.n), d, dtype=torch.float64)
    probes[1:1 + d] = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        images, _, _ = integrate(sampler, score, time_grid, probes, noise, check_finite=False, final=final)
    offset = images[0]
    return (images[1:1 + d] - offset).T, offset, (images[1 + d:] - offset).T


def has_exact_law(method: MethodLike, **options: Any) -> bool:
    """Whether :func:`exact_output_law` can give ``method``'s law with ``options``: the method
    declares itself affine in (x_T, noise) for an affine score. Unknown methods or options raise
    as in :func:`diffsde.sample`."""
    return resolve_method(method, **options).affine


def _prior_law(score: GaussianScore, prior: PriorLike, T: float) -> tuple[Tensor, Tensor]:
    d = score.dim
    if isinstance(prior, str):
        if prior == "exact":
            return score.mean_and_cov(T)
        if prior == "normal":
            return torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
        if prior == "tweedie":  # the start map is affine for a Gaussian score: x' = A ε + b, ε ~ N(0, I)
            probes = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
            with torch.no_grad():
                images = tweedie_start(score, probes, T)
            offset, columns = images[0], (images[1:] - images[0]).T
            return offset, columns @ columns.T
        raise ValueError(f"prior must be 'normal', 'exact', 'tweedie' or a (mean, cov) pair, got {prior!r}")
    if not isinstance(prior, (tuple, list)) or len(prior) != 2:
        raise TypeError(f"prior must be 'normal', 'exact' or a (mean, cov) pair of real arrays, got "
                        f"{type(prior).__name__}")
    # Real values only (a complex covariance would lose its imaginary part silently), read in float64.
    expected = "a real array (the prior is a (mean, cov) pair of real arrays)"
    mean = real_float64(prior[0], "the prior's mean", expected)
    cov = real_float64(prior[1], "the prior's cov", expected)
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"prior must be a (mean (d,), cov (d, d)) pair with d = {d}, "
                         f"got shapes {tuple(mean.shape)} and {tuple(cov.shape)}")
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("the prior's mean must be finite, got a NaN or infinite entry")
    check_spd(cov, "the prior's cov")
    return mean, cov

"""Karras et al. 2022's sampler ("Elucidating the design space of diffusion-based generative
models", Algorithm 2; Algorithm 1 without churn), stepped in the VE coordinates of the OU.

The state ``x`` (N, d) at OU time t is read as ``y = x / α(t) = x e^{t/2}`` with noise level
``σ = σ_VE(t) = sqrt(e^t - 1)`` (:mod:`diffsde.coordinates`; Karras et al. Table 1 with
σ(t) = t, s(t) = 1), and the denoiser is Tweedie's ``D(y; σ) = E[x0 | x_t = α y]
= data_from_score(s(α y, t), α y, t)`` at ``t = log(1 + σ²)``. One step from σ_i to σ_{i+1}:

* churn: ``γ_i = min(churn / n, sqrt(2) - 1)`` if ``s_tmin <= σ_i <= s_tmax`` else 0 (n = the
  grid's number of steps), ``σ̂ = σ_i (1 + γ_i)``, ``ŷ = y + s_noise sqrt(σ̂² - σ_i²) z``;
* Euler: ``d = (ŷ - D(ŷ; σ̂)) / σ̂``, ``y_{i+1} = ŷ + (σ_{i+1} - σ̂) d``;
* Heun (unless σ_{i+1} = 0): ``d' = (y_{i+1} - D(y_{i+1}; σ_{i+1})) / σ_{i+1}``,
  ``y_{i+1} = ŷ + (σ_{i+1} - σ̂) (d + d') / 2``;

and ``x_{i+1} = α(t_{i+1}) y_{i+1}``. The score at σ̂ is evaluated at the OU time
``t̂ = log(1 + σ̂²) > t_i`` (above the grid's first time at the first step when γ_0 > 0).
Like k-diffusion's ``sample_euler`` / ``sample_heun``, a step to σ = 0 (t = 0) is an Euler step
(``y_{i+1} = D(ŷ; σ̂)``, finite), so a grid may end at t = 0 and the score is never evaluated
there; and one normal draw is taken every step when churn > 0 (used where γ_i > 0), so the
noise sequences line up (k-diffusion also draws, unused, when churn = 0; we draw none then). The
options keep k-diffusion's names (``churn`` is its ``s_churn``). The step reads the grid's times
only (σ_VE and α from t): on a bare grid, or a schedule's grid with ``exact_times=True``, these
agree with the grid's ᾱ.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from torch import Tensor

from .._checks import check_choice, check_real
from ..coordinates import signal_scale, time_from_ve_sigma, ve_sigma
from ..parametrizations import data_from_score
from ..schedules import Interval, TimeGrid
from .registry import Method, Sampler, _options, register

__all__ = ["edm_step", "SOLVERS"]

#: The solvers of Algorithm 2: name -> (declared order without churn, score evaluations per step).
SOLVERS = {"euler": (1.0, 1), "heun": (2.0, 2)}

_DEFAULTS = {"solver": "heun", "churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}

_MAX_GAMMA = 2 ** 0.5 - 1  # Karras et al.'s cap: σ̂ <= sqrt(2) σ_i (k-diffusion's 2 ** 0.5 - 1)


def _denoised(score, y: Tensor, t: float) -> Tensor:
    """Karras et al.'s ``D(y; σ_VE(t))``: Tweedie's x0 at the OU state ``x = α(t) y``."""
    x = signal_scale(t) * y
    return data_from_score(score(x, t), x, t)


def _steps_in_grid(x: Tensor, grid: TimeGrid) -> int:
    """The solver state: the grid's number of steps n, which γ_i = min(churn / n, sqrt(2) - 1) reads."""
    return grid.n


def edm_step(score, x: Tensor, interval: Interval, noise: Tensor, state: int, *, solver: str, churn: float,
             s_tmin: float, s_tmax: float, s_noise: float) -> tuple[Tensor, int]:
    """One step of Karras et al. 2022's Algorithm 2 (module docstring) from ``interval.t_from`` to
    ``interval.t_to``; ``x`` (N, d) is the OU state, ``noise`` (1, N, d) when churn > 0 (else empty),
    ``state`` the grid's number of steps. Coefficients are float64 Python floats."""
    t_from, t_to = interval.t_from, interval.t_to
    sigma, sigma_to = ve_sigma(t_from), ve_sigma(t_to)
    y = math.exp(0.5 * t_from) * x
    gamma = min(churn / state, _MAX_GAMMA) if churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    if gamma > 0:
        sigma_hat = sigma * (gamma + 1)
        y = y + (s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2)) * noise[0]
        t_hat = time_from_ve_sigma(sigma_hat)
    else:
        sigma_hat, t_hat = sigma, t_from
    dt = sigma_to - sigma_hat
    d = (y - _denoised(score, y, t_hat)) / sigma_hat
    y_next = y + d * dt
    if solver == "heun" and t_to > 0:
        d_end = (y_next - _denoised(score, y_next, t_to)) / sigma_to
        y_next = y + (0.5 * (d + d_end)) * dt
    return signal_scale(t_to) * y_next, state


def _edm(**options: Any) -> Sampler:
    opts = _options(options, _DEFAULTS, "edm")
    solver = check_choice(opts["solver"], "solver", SOLVERS)
    churn = check_real(opts["churn"], "churn", 0)
    s_tmin = check_real(opts["s_tmin"], "s_tmin", 0)
    s_tmax = check_real(opts["s_tmax"], "s_tmax", 0, finite=False)
    s_noise = check_real(opts["s_noise"], "s_noise", 0)
    if s_tmin > s_tmax:
        raise ValueError(f"need s_tmin <= s_tmax (the σ_VE range where churn applies), got s_tmin={s_tmin!r}, "
                         f"s_tmax={s_tmax!r}")
    order, evals = SOLVERS[solver]
    resolved = {"solver": solver, "churn": churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    if churn == 0:
        # Algorithm 1: a deterministic path, so its pathwise error is its error (strong = weak).
        weak, strong, draws = order, order, 0
    else:
        # Churn adds the exact forward noise from σ_i to σ̂ (it maps p_{σ_i} to p_{σ̂}), then integrates
        # the ODE over σ_{i+1} - σ̂ = O(1/n): the law keeps the solver's weak order (measured with exact
        # laws). With s_noise != 1 the added variance is wrong by (s_noise² - 1)(σ̂² - σ²) every step,
        # a bias that does not shrink with n: no order. The noise is no increment of one Brownian
        # path (its scale follows γ_i, set by the grid), so no strong order is declared.
        weak, strong, draws = (order if s_noise == 1 else None), None, 1
    label = f"edm-{solver}" + (f"(churn={churn:g})" if churn else "")
    # evaluates_at_end=False: Heun evaluates at t_to on every step except a step to t = 0 (an Euler
    # step there), so a grid ending at t = 0 stays usable with an ε-based score; the field cannot say
    # "at t_to unless t_to = 0". score_evals is the per-step bound: Heun's step to t = 0 takes one.
    # alpha_bars_normal: the step computes e^{t/2} and σ_VE = sqrt(e^t - 1) (and e^{t̂} ≈ 2 e^t),
    # finite while -log ᾱ <= 708.4 (on a schedule grid, t <= -log ᾱ).
    return Sampler("edm", label, resolved, coordinates="sigma_ve",
                   weak_order=weak, strong_order=strong, noise_draws=draws,
                   score_evals=evals, evaluates_at_end=False, grid_needs=("alpha_bars_normal",),
                   step=functools.partial(edm_step, **resolved), init=_steps_in_grid,
                   description=f"Karras et al. 2022, Algorithm 2 ({solver}, churn={churn:g}) in σ_VE")


register(Method("edm", _edm, "Karras et al. 2022's sampler (Algorithm 2) in σ_VE",
                variants={f"edm-{solver}": {"solver": solver} for solver in SOLVERS}))

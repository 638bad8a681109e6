"""DDIM: the generalized (non-Markovian) reverse step of Song, Meng & Ermon 2021,
"Denoising Diffusion Implicit Models" (eq. 12 with the σ of eq. 16), driven by a score.

On a step from ``t_from`` down to ``t_to`` (forward OU times, ᾱ = e^{-t}) with
``ε = -σ_from s(x, t_from)`` and ``x0 = (x - σ_from ε) / α_from``:

    σ_η = η sqrt((1 - ᾱ_to) / (1 - ᾱ_from)) sqrt(1 - ᾱ_from / ᾱ_to)                 (eq. 16)
    x_next = α_to x0 + sqrt(1 - ᾱ_to - σ_η²) ε + σ_η z                                (eq. 12)

with α = sqrt(ᾱ), σ = sqrt(1 - ᾱ). ``η = 0`` is deterministic: it is exactly Euler's method on
the probability-flow ODE written in the coordinates (σ_VE, y = x / α) of
:func:`diffsde.coordinates.ve_sigma` (Song et al. 2021, DDIM Sec. 4.3, eq. 14:
``y_next = y + (σ_VE(t_to) - σ_VE(t_from)) ε``), and also the first-order DPM-Solver.
``η = 1`` is Ho et al. 2020's ancestral step with σ² = β̃ (``"ddpm"`` with
``variance="beta_tilde"``) on any pair of times.

The step reads the interval's *times*, not the grid's ᾱ's: ᾱ = e^{-t} at ``t_from``/``t_to``,
the ᾱ at which ``score(x, t)`` is ∇ log p_t. On a bare grid and on a schedule's grid with
``exact_times=True`` this is the schedule's own ᾱ_i (what diffusers' DDIMScheduler uses).
A step to ``t_to = 0`` (ᾱ = 1) returns ``x0`` and adds no noise (σ_η = 0 there), as
diffusers' ``set_alpha_to_one=True`` does. Unlike ``"ddpm"`` the last step to a ``t_min > 0``
keeps its noise (as diffusers does).

Shapes: x (N, d); noise (1, N, d) for η > 0, empty for η = 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from torch import Tensor

from .._checks import check_real
from ..coordinates import noise_std
from ..schedules import Interval
from .registry import Method, Sampler, _options, register

__all__ = ["ddim_step"]


def ddim_step(score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None, *,
              eta: float = 0.0) -> tuple[Tensor, Any]:
    """One DDIM step (Song, Meng & Ermon 2021, eqs. 12 and 16) from ``interval.t_from`` to
    ``interval.t_to``; ``noise[0]`` (N, d) is used when ``eta > 0``. Coefficients in float64."""
    t_from, t_to = interval.t_from, interval.t_to
    sigma_from = noise_std(t_from)
    var_to = -math.expm1(-t_to)                         # 1 - ᾱ_to
    eps = (-sigma_from) * score(x, t_from)
    # α_to x0 = (α_to / α_from) (x - σ_from ε): the ratio e^{h/2} never divides by a tiny α_from.
    ratio = math.exp(0.5 * (t_from - t_to))
    signal = ratio * (x - sigma_from * eps)
    if eta == 0.0:
        return signal + math.sqrt(var_to) * eps, state
    # σ_η² = η² (1 - ᾱ_to) (1 - ᾱ_from / ᾱ_to) / (1 - ᾱ_from), with 1 - ᾱ_from / ᾱ_to = 1 - e^{-h}.
    share = -math.expm1(-(t_from - t_to)) / -math.expm1(-t_from)
    var_eta = eta * eta * var_to * share
    direction = math.sqrt(max(var_to - var_eta, 0.0))
    return signal + direction * eps + math.sqrt(var_eta) * noise[0], state


def _ddim(**options: Any) -> Sampler:
    opts = _options(options, {"eta": 0.0}, "ddim")
    eta = check_real(opts["eta"], "eta", 0.0, 1.0)
    deterministic = eta == 0.0
    # η = 0 is Euler on the probability-flow ODE: its path error is its error (strong = weak = 1).
    # η > 0: weak order 1 (checked on exact laws for η = 0.5, 1); no strong order is declared.
    return Sampler("ddim", "ddim", {"eta": eta}, coordinates="sigma_ve",
                   weak_order=1.0, strong_order=1.0 if deterministic else None,
                   noise_draws=0 if deterministic else 1, score_evals=1, evaluates_at_end=False,
                   grid_needs=("alpha_bars_normal",),
                   step=functools.partial(ddim_step, eta=eta),
                   description=f"DDIM (Song, Meng & Ermon 2021, eq. 12), eta = {eta:g}")


register(Method("ddim", _ddim, "DDIM's generalized reverse step (eta = 0: deterministic)", featured=()))
